"""What the benchmarks share: their timing, and their PyTorch peers (torch and torchvision when
they are wanted and installed)."""

import os
import statistics
import time

import numpy as np


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() after one untimed call (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_seconds() -> float:
    """User plus system CPU time of this process, all its threads."""
    used = os.times()
    return used.user + used.system


def timed(fn, seconds: float) -> dict:
    """{"ms": median, "p10", "p90", "calls", "busy_threads"} of back-to-back fn() calls for
    `seconds` (at least 3 calls), after two untimed calls (compilation, caches). busy_threads:
    the process's CPU time over the wall time of the timed calls (threads that spin while
    waiting count as busy)."""
    fn()
    fn()
    times, start, cpu = [], time.perf_counter(), _cpu_seconds()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    busy = (_cpu_seconds() - cpu) / max(time.perf_counter() - start, 1e-9)
    ms = np.asarray(times) * 1e3
    return {
        "ms": statistics.median(ms.tolist()),
        "p10": float(np.percentile(ms, 10)),
        "p90": float(np.percentile(ms, 90)),
        "calls": len(times),
        "busy_threads": round(busy, 2),
    }


def import_torch(mode: str):
    """(torch, torchvision), or None. mode: "no" (never), "auto" (when both import) or "yes"
    (both must import: the ImportError propagates)."""
    if mode == "no":
        return None
    try:
        import torch
        import torchvision
    except ImportError:
        if mode == "yes":
            raise
        return None
    return torch, torchvision
