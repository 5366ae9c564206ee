"""TensorBoard scalars through tensorboardX, which writes event files without TensorFlow."""

import numbers
import uuid

import jax
import numpy as np


class TensorBoardWriter:
    """Writes a metrics dict's scalars at a step to `logdir` (process 0 only; elsewhere a no-op).

        writer = TensorBoardWriter(os.path.join(workdir, "tensorboard"))
        writer.write(step, {"train/loss": 0.31, "train/lr": 0.1})
        writer.close()

    Keys become tag names as they are ("train/loss" groups under "train"); values that are not
    scalars (arrays of more than one element, strings) are skipped. `purge_step`: a resumed run's
    first step; TensorBoard then hides the events an interrupted run wrote from that step on.
    """

    def __init__(self, logdir: str, purge_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self._writer = None
        if self.enabled:
            from tensorboardX import SummaryWriter  # imported here: only process 0 needs it

            # The file name has the time in seconds; the suffix keeps a quick restart's apart.
            self._writer = SummaryWriter(
                logdir, purge_step=purge_step, filename_suffix=f".{uuid.uuid4().hex[:8]}"
            )

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        for key, value in metrics.items():
            if hasattr(value, "shape") and np.size(value) == 1:
                value = np.asarray(value).item()
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), int(step))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
