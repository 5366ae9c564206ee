"""What a run reports: `metrics.jsonl`, a progress line on stderr and the final stdout line.

Only process 0 writes, so a multi-host run produces one log.
"""

import json
import math
import os
import sys
import time

import jax


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        # JSON has no NaN or infinity: such a metric is written as null.
        return round(value, 6) if math.isfinite(value) else None
    return value


def _parse(line: str) -> dict | None:
    """A metrics.jsonl line as a record, or None if it is not one (blank, cut short)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


class MetricsLog:
    """Appends one JSON object per event to `<workdir>/metrics.jsonl`: {"step": int, "a/b": ...}."""

    def __init__(self, workdir: str, *, total_steps: int, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        # The same scalars as TensorBoard events in <workdir>/tb (tensorboardX: no TensorFlow),
        # opened at the first write, once `truncate_after` has said where the run resumes.
        self._tensorboard_dir = None
        if tensorboard and jax.process_index() == 0:
            self._tensorboard_dir = os.path.join(workdir, "tb")
        self._tensorboard = None
        self._purge_step = None
        self.total_steps = total_steps
        self.enabled = jax.process_index() == 0
        self._last_time = None
        self._last_step = None
        self._first_step_seconds = None

    def truncate_after(self, step: int) -> None:
        """Drops entries later than `step` (left by a run that stopped after its last checkpoint,
        or before its first when `step` is 0), so that a resumed run's log reads as if it had
        never been interrupted. TensorBoard is told to hide that run's events after `step` too."""
        self._purge_step = step + 1
        if not self.enabled or not os.path.exists(self.path):
            return
        kept, damaged = [], 0
        with open(self.path) as f:
            for line in f:
                record = _parse(line)
                if record is None:
                    damaged += line.strip() != ""
                elif record["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if damaged:  # e.g. a line cut short by a kill during its write
            note(f"{self.path}: dropped {plural(damaged, 'unreadable line')}")
        with open(self.path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)

    def record_with(self, step: int, prefix: str) -> dict | None:
        """The logged record of `step` with a metric named `prefix`... (e.g. "eval/": a finished
        run's final evaluation), or None."""
        if not os.path.exists(self.path):
            return None
        with open(self.path) as f:
            for line in f:
                record = _parse(line)
                if record is None or record["step"] != step:
                    continue
                if any(k.startswith(prefix) for k in record):
                    return record
        return None

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
        if self._tensorboard is None and self._tensorboard_dir is not None:
            from jaxvision.train.tensorboard import TensorBoardWriter

            self._tensorboard = TensorBoardWriter(self._tensorboard_dir, self._purge_step)
        if self._tensorboard is not None:
            self._tensorboard.write(int(step), metrics)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def start_timer(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step
        self._first_step_seconds = None

    def first_step_done(self, step: int) -> None:
        """Marks the end of this run's first step, which includes compiling the step: it stays
        out of the throughput and ETA of later progress lines."""
        now = time.perf_counter()
        self._first_step_seconds = now - self._last_time
        self._last_time, self._last_step = now, step

    def throughput(self, step: int, global_batch_size: int) -> tuple[float, float]:
        """(images per second, seconds per step) since the last call, or since the first step
        finished (the first step alone when it is the one being logged)."""
        now = time.perf_counter()
        steps = step - self._last_step
        if steps > 0:
            seconds_per_step = (now - self._last_time) / steps
        else:  # the window holds only the compiling first step
            seconds_per_step = self._first_step_seconds or (now - self._last_time)
        self._last_time, self._last_step = now, step
        return global_batch_size / seconds_per_step, seconds_per_step

    def progress(self, step: int, loss: float, img_per_s: float, seconds_per_step: float) -> None:
        """One stderr line: `step 120/400 (30%) loss 0.3120 1,234 img/s ETA 0:00:31`."""
        if not self.enabled:
            return
        eta = int(max(self.total_steps - step, 0) * seconds_per_step)
        percent = round(100 * step / max(self.total_steps, 1))
        if step < self.total_steps:  # 100% only once done
            percent = min(percent, 99)
        print(
            f"step {step}/{self.total_steps} ({percent}%) "
            f"loss {loss:.4f} {img_per_s:,.0f} img/s "
            f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}",
            file=sys.stderr,
            flush=True,
        )


def plural(count: int, noun: str) -> str:
    """`plural(1, "device")` -> "1 device", `plural(8, "device")` -> "8 devices"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def note(message: str) -> None:
    """A one-off line for the user on stderr (process 0 only), e.g. where a run resumed."""
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


def print_final(metrics: dict) -> None:
    """The last stdout line of a finished run: `final: {json}`."""
    if jax.process_index() == 0:
        final = {k: _jsonable(v) for k, v in metrics.items()}
        print("final: " + json.dumps(final, allow_nan=False), flush=True)
