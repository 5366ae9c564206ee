"""Preemption safety: SIGTERM and kill -9 at awkward and at random steps, then a rerun of the same
command, give exactly the uninterrupted run's metrics.jsonl and final line (timings aside).

One workdir goes through every interruption in turn (kill -9 before the first checkpoint, SIGTERM
while the step compiles, SIGTERM and kill -9 at random steps), each rerun resuming what the last
one left; the last rerun must end where the uninterrupted run did. The processes run a ResNet-10
(tests/experiments/resnet10_train.py: BatchNorm statistics are part of what must resume); the
uninterrupted reference is the same run trained in this process (the same programs, from the
same compilation cache)."""

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from experiments.classification import train_and_evaluate
from tests.experiments import resnet10_train
from tests.experiments.helpers import (
    ROOT,
    load_config,
    parse_final,
    python_env,
    read_metrics,
    run_module,
    without_timings,
)

pytestmark = pytest.mark.slow  # every test here takes over ~10 s

TOTAL_STEPS = 30
OVERRIDES = dict(
    model="resnet10",
    total_steps=TOTAL_STEPS,
    log_every_steps=5,
    checkpoint_every_steps=10,
    # One evaluation mid-run (it is in metrics.jsonl too) and the final one.
    eval_every_steps=20,
    batch_size=64,
)
RECIPE = "classification/resnet18_digits.py"
ARGS = (
    f"--config=experiments/configs/{RECIPE}",
    *(f"--config.{k}={v}" for k, v in OVERRIDES.items()),
    "--config.model_kwargs.width=8",  # narrow, BatchNorm kept: fast steps
)
MODULE = "tests.experiments.resnet10_train"


def _command(workdir):
    return [sys.executable, "-m", MODULE, f"--workdir={workdir}", *ARGS]


def _run_to_end(workdir):
    return run_module(MODULE, f"--workdir={workdir}", *ARGS, check=True)


def _interrupt_at(workdir, step, sig, extra_delay, line_start=None):
    """Starts the run, waits for the progress line of `step` (or the first stderr line that
    starts with `line_start`), then sends `sig`."""
    line_start = line_start or f"step {step}/"
    process = subprocess.Popen(
        _command(workdir), cwd=ROOT, env=python_env(), stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith(line_start):
            time.sleep(extra_delay)
            process.send_signal(sig)
            break
    rest = process.stderr.read()
    return process.wait(timeout=300), "".join(seen) + rest


def _comparable(workdir, stdout):
    final = parse_final(stdout)
    final.pop("elapsed_s")
    return without_timings(read_metrics(workdir)), final


def _stopped_on_sigterm(returncode, stderr, workdir):
    """The step a SIGTERM stopped the run at: it exited 0 and left that step's checkpoint."""
    assert returncode == 0, stderr[-2000:]
    assert "stopped at step " in stderr and "on SIGTERM" in stderr, stderr[-2000:]
    stopped = int(stderr.split("stopped at step ")[1].split("/")[0])
    assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))
    return stopped


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run trained to the end in this process: its metrics and final line (as printed)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    config = load_config(RECIPE, **OVERRIDES)
    config.model_kwargs.width = 8
    out = io.StringIO()
    with resnet10_train.registered(), contextlib.redirect_stdout(out):
        train_and_evaluate(config, workdir)
    return _comparable(workdir, out.getvalue())


def test_interruptions_of_every_kind_resume_to_identical_metrics(tmp_path, uninterrupted):
    workdir = str(tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")

    # kill -9 before anything is saved: the rerun starts over and the killed run's log lines go.
    returncode, _ = _interrupt_at(workdir, 5, signal.SIGKILL, 0.0)
    assert returncode == -signal.SIGKILL
    assert not os.listdir(checkpoints)

    # SIGTERM while the step compiles (the 'resnet10: N parameters' line comes just before): the
    # run still stops after its first step, with a checkpoint, and exits 0.
    returncode, stderr = _interrupt_at(workdir, None, signal.SIGTERM, 0.0, line_start="resnet10: ")
    assert returncode == 0, stderr[-2000:]
    assert f"stopped at step 1/{TOTAL_STEPS} on SIGTERM" in stderr, stderr[-2000:]
    assert sorted(os.listdir(checkpoints)) == ["1"]

    # SIGTERM, then kill -9, each anywhere in the few steps after a progress line (every 5
    # steps), the step-10 save and the step-20 evaluation included, and well before the last step
    # (30): a signal after the final step has nothing left to interrupt.
    rng = random.Random()
    step, delay = 10, rng.uniform(0.0, 0.2)
    where = f"SIGTERM after the step-{step} line + {delay:.2f}s"
    returncode, stderr = _interrupt_at(workdir, step, signal.SIGTERM, delay)
    assert f"resumed from {checkpoints} at step 1" in stderr, stderr[-2000:]
    stopped = _stopped_on_sigterm(returncode, stderr, workdir)
    step, delay = rng.choice([s for s in (15, 20) if s > stopped]), rng.uniform(0.0, 0.2)
    where += f", kill -9 after the step-{step} line + {delay:.2f}s"
    returncode, stderr = _interrupt_at(workdir, step, signal.SIGKILL, delay)
    assert returncode == -signal.SIGKILL
    assert f"resumed from {checkpoints} at step {stopped}" in stderr, stderr[-2000:]

    resumed = _run_to_end(workdir)
    assert "resumed from" in resumed.stderr
    assert _comparable(workdir, resumed.stdout) == uninterrupted, where


def test_non_finite_loss_stops_without_overwriting_the_last_checkpoint(tmp_path, digits_run):
    # The session's digits CNN run (finished, its one checkpoint at step 60), continued to step
    # 80 at a learning rate that overflows: what is checked is the loop's guard and the exit
    # status, whatever the model.
    workdir = str(tmp_path / "w")
    shutil.copytree(digits_run[0], workdir)
    args = ("--config.image_size=8", "--config.pad=1", "--config.total_steps=80")
    args += ("--config.checkpoint_every_steps=5", "--config.learning_rate=1e30")
    result = run_module("experiments.digits", f"--workdir={workdir}", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: train/") and " at step " in line, line
    assert "Traceback" not in result.stderr
    # Only the good step-60 checkpoint is there: nothing after the loss went non-finite.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["60"]
