"""SIGTERM from the first moment of a run: the programs call `remember_sigterm()` before their
heavy imports (JAX alone takes seconds), so a scheduler's SIGTERM during start-up is kept for
the run's preemption watch instead of killing the process with status 143.

This module imports nothing heavy, on purpose.
"""

import signal

_received: list[str] = []


def _remember(signum, _frame) -> None:
    _received.append(signal.Signals(signum).name)


def remember_sigterm() -> None:
    """Installs a handler that records SIGTERM; `take_early_signal` hands it over."""
    signal.signal(signal.SIGTERM, _remember)


def take_early_signal() -> str | None:
    """The name of a signal received before the run's own watch was installed, if any."""
    return _received.pop() if _received else None
