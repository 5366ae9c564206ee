"""A `jax.profiler` trace of chosen training steps: `--config.profile_steps=a,b`.

The trace covers steps a..b (host and device: the input, the dispatch, every XLA op), each
step marked as one (TensorBoard's profile plugin splits its step-time graph by them). It is
written under `<workdir>/profile/plugins/profile/<time>/` as `<host>.xplane.pb` (TensorBoard:
`tensorboard --logdir <workdir>/profile`, Profile tab) and `perfetto_trace.json.gz`
(https://ui.perfetto.dev, Open trace file). How to read it: docs/performance.md, "Profiling a run".
"""

import contextlib
import os

import jax

from jaxvision.errors import UserError
from jaxvision.train.reporting import note

USAGE = "'' (off), 'a' or 'a,b' with 1 <= a <= b, e.g. --config.profile_steps=10,20"


def parse_steps(value) -> tuple[int, int] | None:
    """`""` -> None (off); `"a"` -> (a, a); `"a,b"` -> (a, b), steps counted from 1."""
    if value is None or value == "":
        return None
    parts = str(value).replace(" ", "").split(",")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not 1 <= numbers[0] <= numbers[1]:
        raise UserError(f"profile_steps={value!r} is not a step range: it must be {USAGE}")
    return numbers[0], numbers[1]


class StepProfiler:
    """Traces the steps `steps` = (a, b) into `directory`; None traces nothing.

    Use: `with profiler.step(s): <fetch the batch, dispatch step s>`, then
    `profiler.step_done(s, outputs, last_step)`. The trace starts before step a (or the first
    step of a run that resumes inside the range) and stops once step b's outputs are ready
    (the only wait it adds), or at `last_step`, or at `close`.
    """

    def __init__(self, steps: tuple[int, int] | None, directory: str):
        self.steps = steps
        self.directory = directory
        self.tracing = False

    def step(self, step: int):
        if self.steps is None:
            return contextlib.nullcontext()
        first, last = self.steps
        if not self.tracing and first <= step <= last:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self.tracing, self._first_traced = True, step
        if not self.tracing:
            return contextlib.nullcontext()
        self._last_traced = step
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def step_done(self, step: int, outputs, last_step: int) -> None:
        if self.tracing and (step >= self.steps[1] or step >= last_step):
            jax.block_until_ready(outputs)  # the trace holds the device work of step b
            self.close()

    def close(self) -> None:
        """Stops a trace in progress (a run that ends or fails inside the range)."""
        if self.tracing:
            self.tracing = False
            jax.profiler.stop_trace()
            note(
                f"profile of steps {self._first_traced}..{self._last_traced} in {self.directory}: "
                f"tensorboard --logdir {self.directory} (Profile tab), or its "
                "perfetto_trace.json.gz at https://ui.perfetto.dev"
            )
