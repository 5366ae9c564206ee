"""What the benchmarks share: their timing, and their PyTorch peers (torch and torchvision when
they are wanted and installed)."""

import statistics
import time


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of fn() after one untimed call (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
