"""The shared loop never waits for the device between log lines, and the input pipeline keeps
PREFETCH_BATCHES built ahead while the loop does wait (at a log line).

The run is the digits recipe with a step made slow on purpose (~0.1 s of extra device work
the metrics depend on), so that whether step s has finished when step s + 1 is dispatched is
a matter of tens of milliseconds, not of scheduling noise. Host callbacks cannot make the
step slow here: on CPU a computation with a host callback runs synchronously.
"""

import threading
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import pytest

from experiments import classification
from jaxvision import data
from jaxvision.data.pipeline import PREFETCH_BATCHES
from jaxvision.train import loop, steps
from tests.experiments.helpers import load_config

BATCH = 32
LOG_EVERY = 6
# Past the last log step, batches enough to fill the pipeline's buffer.
TOTAL_STEPS = 2 * LOG_EVERY + PREFETCH_BATCHES + 1


def with_device_work(train_step, size: int = 256, repeats: int = 64):
    """`train_step` followed by `repeats` [size, size] matmuls that its loss depends on."""

    def step(state, batch):
        state, metrics = train_step(state, batch)
        x = jnp.full((size, size), 1.0 / size) + 0.0 * metrics["train/loss"]
        x = jax.lax.fori_loop(0, repeats, lambda _, x: jnp.tanh(x @ x), x)
        # x * 0 is not folded away for floats (NaN * 0 is NaN): the loss waits for the matmuls.
        metrics["train/loss"] = metrics["train/loss"] + 0.0 * x[0, 0]
        return state, metrics

    return step


class RecordingSource(Sequence):
    """A source as a file-backed one is read (by the pipeline's threads), noting when each
    example was read."""

    def __init__(self, source):
        self.source = source
        self.read = {}
        self.lock = threading.Lock()

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        example = self.source[index]
        with self.lock:
            self.read[threading.get_ident(), index] = time.perf_counter()
        return example


class Probe:
    """What the loop does, step by step: whether the previous step had finished when a step was
    dispatched, and how many batches ahead were built when the loop asked for one."""

    def __init__(self):
        self.previous_done = []  # [s - 1]: step s had finished when step s + 1 was dispatched
        self.built_ahead = []  # [s - 1]: batches after batch s read when the loop took batch s

    def jit_train_step(self, real):
        def jit(*args, **kwargs):
            jitted = real(*args, **kwargs)
            last = []

            def call(state, batch):
                if last:
                    self.previous_done.append(last[-1].is_ready())
                state, metrics = jitted(state, batch)
                last[:] = [metrics["train/loss"]]
                return state, metrics

            return call

        return jit

    def train_batches(self, real):
        def batches(*args, **kwargs):
            iterator = real(*args, **kwargs)

            def taken():
                for step, batch in enumerate(iterator, start=1):
                    # One thread builds a whole batch, reading then stacking its examples
                    # (under a millisecond here): after a wait of tens of ms, read is built.
                    self.built_ahead.append(self._examples_read() // BATCH - step)
                    yield batch

            return taken()

        return batches

    def watch(self, source: RecordingSource):
        self._source = source

    def _examples_read(self) -> int:
        with self._source.lock:
            return len(self._source.read)


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    probe = Probe()
    config = load_config(
        "classification/simple_cnn_digits.py",
        batch_size=BATCH,
        total_steps=TOTAL_STEPS,
        log_every_steps=LOG_EVERY,
        checkpoint_every_steps=0,
        worker_count=0,
        # The digits at their own 8 px, unaugmented: a batch is built in well under a
        # millisecond, so the pipeline outpaces the device however busy the machine is.
        image_size=8,
        crop="none",
    )

    def setup(config):
        run = classification.setup(config)
        run.train_step = with_device_work(run.train_step)
        run.train_source = RecordingSource(run.train_source)
        probe.watch(run.train_source)
        return run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(steps, "jit_train_step", probe.jit_train_step(steps.jit_train_step))
        patch.setattr(data, "train_batches", probe.train_batches(data.train_batches))
        final = loop.train_and_evaluate(config, str(tmp_path_factory.mktemp("sync")), setup)
    assert final["step"] == TOTAL_STEPS
    return probe


@pytest.mark.slow
def test_between_log_lines_step_s_plus_1_is_dispatched_before_step_s_finishes(probed_run):
    done = probed_run.previous_done  # done[i]: step i + 1 had finished when i + 2 was dispatched
    assert len(done) == TOTAL_STEPS - 1
    # The loop waits on step 1 (it compiles: the timer starts after it) and on each log step.
    waited = {1} | {s for s in range(1, TOTAL_STEPS) if s % LOG_EVERY == 0}
    assert [s for s in range(1, TOTAL_STEPS) if done[s - 1]] == sorted(waited)


def test_while_the_loop_waits_at_a_log_line_the_pipeline_builds_prefetch_batches(probed_run):
    # Asked for the batch after a log step, after the wait for the device, the pipeline has
    # that batch and PREFETCH_BATCHES - 1 more built (its buffer is PREFETCH_BATCHES deep).
    for log_step in range(LOG_EVERY, TOTAL_STEPS, LOG_EVERY):
        assert probed_run.built_ahead[log_step] >= PREFETCH_BATCHES - 1, str(probed_run.built_ahead)
    # ... and never more than the buffer and the batches its threads are building.
    assert max(probed_run.built_ahead) <= PREFETCH_BATCHES, probed_run.built_ahead
