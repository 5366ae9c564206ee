"""Stopping a run safely: on a preemption signal, and on a loss that is no longer finite.

Both are checked between steps, so a checkpoint is only ever written from a complete, finite
state.
"""

import math
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxvision import signals as early_signals
from jaxvision.errors import UserError


class PreemptionWatch:
    """Turns SIGTERM (what TPU and GPU schedulers send before preemption) and a first Ctrl-C
    (SIGINT) into a request to stop after the current step, with a checkpoint; a second Ctrl-C
    interrupts at once. All processes of a multi-host run agree on the step to stop at."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), sync_every_steps: int = 10):
        self._sync_every_steps = sync_every_steps
        # A signal the process ignores (SIGINT of a background job) stays ignored.
        self._previous = {
            s: signal.signal(s, self._handle)
            for s in signals
            if signal.getsignal(s) is not signal.SIG_IGN
        }
        # One that arrived while the program was still importing (jaxvision.signals).
        self.signal_name = early_signals.take_early_signal()

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signal_name = signal.Signals(signum).name

    def should_stop(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.signal_name is not None
        if step % self._sync_every_steps:  # a cross-host gather every step would cost latency
            return False
        flags = multihost_utils.process_allgather(np.array(self.signal_name is not None))
        if np.any(flags) and self.signal_name is None:
            self.signal_name = "SIGTERM (another host)"
        return bool(np.any(flags))

    def restore_handlers(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# A loss that stops being finite this soon after a state was loaded points at what was loaded.
SUSPECT_STEPS = 10


class NonFiniteLoss(UserError):
    """The training loss or gradient norm became NaN or infinite at `step`.

    loaded: what the run's state was read from at `loaded_at` when that was a checkpoint or
    imported weights ("the checkpoint at step 200 in DIR"), None when it started fresh."""

    def __init__(
        self,
        step: int,
        name: str,
        value: float,
        loaded: str | None = None,
        loaded_at: int = 0,
        advice: str = "",
    ):
        self.step = step
        if loaded is not None and step - loaded_at <= SUSPECT_STEPS:
            # A resumed run computes the same steps as an uninterrupted one, and imported
            # weights have not been trained here: the values loaded are the first suspects.
            after = step - loaded_at
            super().__init__(
                f"{name} is {value} at step {step}, {after} step{'s' * (after != 1)} after "
                f"loading {loaded}: suspect the loaded values first (a resumed run repeats "
                "the steps of one that was not stopped), then any setting changed since they "
                f"were written, such as the learning rate (no state was saved); {advice}"
            )
            return
        super().__init__(
            f"{name} is {value} at step {step}: the run stopped without saving this state. "
            "Lower the learning rate, enable grad_clip_norm, or check the input data, then "
            "rerun to resume from the last good checkpoint"
        )


class NonFiniteWatch:
    """Remembers each step's scalars (device arrays, not fetched) until `check` looks at them.

    Fetching once per check instead of once per step keeps the host from waiting on the device.
    loaded, loaded_at, advice: what the state was read from, at which step, and what to do if
    the loss goes non-finite soon after (`NonFiniteLoss`).
    """

    def __init__(
        self,
        names=("train/loss", "train/grad_norm"),
        *,
        loaded: str | None = None,
        loaded_at: int = 0,
        advice: str = "",
    ):
        self._names = names
        self._pending: list[tuple[int, dict]] = []
        self._loaded = (loaded, loaded_at, advice)

    def add(self, step: int, metrics: dict) -> None:
        self._pending.append((step, {n: metrics[n] for n in self._names if n in metrics}))

    def check(self) -> None:
        """Raises NonFiniteLoss for the first step whose loss or gradient norm is not finite."""
        pending, self._pending = jax.device_get(self._pending), []
        for step, values in pending:
            for name, value in values.items():
                if not math.isfinite(float(value)):
                    raise NonFiniteLoss(step, name, float(value), *self._loaded)
