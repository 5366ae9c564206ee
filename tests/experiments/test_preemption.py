"""Preemption safety: SIGTERM and kill -9 at random steps, then a rerun of the same command,
give exactly the uninterrupted run's metrics.jsonl and final line (timings aside)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.experiments.helpers import (
    RESNET_DIGITS,
    ROOT,
    parse_final,
    python_env,
    read_metrics,
    run_module,
    without_timings,
)

pytestmark = pytest.mark.slow  # every test here takes over ~10 s

TOTAL_STEPS = 30
ARGS = (
    f"--config.total_steps={TOTAL_STEPS}",
    "--config.log_every_steps=5",
    "--config.checkpoint_every_steps=10",
    # One evaluation mid-run (it is in metrics.jsonl too) and the final one: each writes its
    # plots, seconds of a short run.
    "--config.eval_every_steps=20",
    # A narrower ResNet-18 (BatchNorm kept) on batches of 64: several times faster steps.
    "--config.model_kwargs.width=8",
    "--config.batch_size=64",
)


def _command(workdir):
    return [sys.executable, "-m", "experiments.train", RESNET_DIGITS, f"--workdir={workdir}", *ARGS]


def _run_to_end(workdir):
    return run_module("experiments.train", RESNET_DIGITS, f"--workdir={workdir}", *ARGS, check=True)


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    return _comparable(workdir, _run_to_end(workdir).stdout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill9"])
def test_interrupted_run_resumes_to_identical_metrics(tmp_path, uninterrupted, sig):
    rng = random.Random()
    step = rng.choice(range(10, 25, 5))  # progress lines come every 5 steps
    # Lands anywhere in the next few steps, saves and the step-20 evaluation included, and
    # before the last step (30): a signal after the final step has nothing left to interrupt.
    delay = rng.uniform(0.0, 0.2)
    workdir = str(tmp_path)
    returncode, stderr = _interrupt_at(workdir, step, sig, delay)
    where = f"(interrupted after the step-{step} line + {delay:.2f}s)"
    if sig == signal.SIGTERM:
        assert returncode == 0, stderr[-2000:]
        assert "stopped at step " in stderr and "on SIGTERM" in stderr, stderr[-2000:]
        stopped = int(stderr.split("stopped at step ")[1].split("/")[0])
        assert str(stopped) in os.listdir(os.path.join(workdir, "checkpoints"))
    else:
        assert returncode == -signal.SIGKILL
    resumed = _run_to_end(workdir)
    if sig == signal.SIGTERM:
        assert f"resumed from {os.path.join(workdir, 'checkpoints')} at step {stopped}" in (
            resumed.stderr
        )
    assert _comparable(workdir, resumed.stdout) == uninterrupted, where


@pytest.mark.parametrize(
    "sig,line_start,stopped",
    [(signal.SIGKILL, "step 5/", None), (signal.SIGTERM, "resnet18: ", 1)],
    ids=["kill9_before_first_checkpoint", "sigterm_during_compilation"],
)
def test_interrupted_before_the_first_checkpoint(tmp_path, uninterrupted, sig, line_start, stopped):
    """kill -9 before anything is saved: the rerun starts over and the killed run's log lines
    go. SIGTERM while the step compiles (the 'resnet18: N parameters' line comes just before):
    the run still stops after its first step, with a checkpoint, and exits 0."""
    workdir = str(tmp_path)
    returncode, stderr = _interrupt_at(workdir, None, sig, 0.0, line_start=line_start)
    if stopped is None:
        assert returncode == -signal.SIGKILL
        assert not os.listdir(os.path.join(workdir, "checkpoints"))
    else:
        assert returncode == 0, stderr[-2000:]
        assert f"stopped at step {stopped}/{TOTAL_STEPS} on SIGTERM" in stderr, stderr[-2000:]
    resumed = _run_to_end(workdir)
    assert _comparable(workdir, resumed.stdout) == uninterrupted


def test_non_finite_loss_stops_without_overwriting_the_last_checkpoint(tmp_path):
    workdir = str(tmp_path)
    # The digits CNN at 8x8: what is checked is the loop's guard, whatever the model; its
    # programs compile in a fraction of the ResNet's time.
    cnn = ("--config=experiments/configs/classification/simple_cnn_digits.py", "--config.pad=1")
    cnn += ("--config.image_size=8", "--config.batch_size=64")
    args = ("--config.total_steps=20", "--config.checkpoint_every_steps=5")
    first = run_module(
        "experiments.train",
        *cnn,
        f"--workdir={workdir}",
        "--config.total_steps=5",
        "--config.checkpoint_every_steps=5",
    )
    assert first.returncode == 0, first.stderr[-2000:]
    result = run_module(
        "experiments.train", *cnn, f"--workdir={workdir}", *args, "--config.learning_rate=1e30"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: train/") and " at step " in line, line
    assert "Traceback" not in result.stderr
    # Only the good step-5 checkpoint is there: nothing after the loss went non-finite.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["5"]
