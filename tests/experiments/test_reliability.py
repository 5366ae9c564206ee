"""Nothing is lost and bad input gets one line: failures during and after training, damaged
checkpoints and logs, busy workdirs, out-of-range values, signals at awkward moments.

Most trials call the training function in this process on a 4-step digits run (fast); those
that need a real process (a kill, a signal during start-up, the exit status) start one.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments import classification
from jaxvision import checkpoint, data
from jaxvision import workdir as workdirs
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.train import loop
from tests.experiments.helpers import ROOT, load_config, read_metrics, run_module, without_timings

SHORT = {
    "total_steps": 4,
    "batch_size": 32,
    "log_every_steps": 2,
    "checkpoint_every_steps": 2,
}


def _config(**overrides):
    return load_config("classification/simple_cnn_digits.py", **{**SHORT, **overrides})


@pytest.fixture(scope="session")
def finished_run(session_cache):
    """(workdir, final figures) of a finished `_config()` run, trained once per session: the
    tests that only need such a run (to damage, rerun or resume) work on a copy (`_copy`)."""

    def build(folder):
        return classification.train_and_evaluate(_config(), f"{folder}/run")

    folder, final = session_cache.get("reliability_finished_digits_run", build)
    return f"{folder}/run", final


def _copy(finished_run, workdir):
    """A copy of the finished run's workdir at `workdir`; returns its final figures."""
    shutil.copytree(finished_run[0], workdir)
    return finished_run[1]


def _run(*args):
    return run_module("experiments.digits", *args, timeout=300)


def _signal_at(batches, index: int, signum):
    """`batches` (a batch generator function) that sends this process `signum` as it hands out
    batch `index`."""

    def wrapped(*args, **kwargs):
        for i, batch in enumerate(batches(*args, **kwargs)):
            if i == index:
                os.kill(os.getpid(), signum)
            yield batch

    return wrapped


def _checkpoints(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


# ---------------------------------------------------------------------------------------------
# Trained work survives failures


def _corrupt_png(path):
    """A PNG whose header and end are intact but whose pixel data does not inflate: it passes
    the check made when a folder opens and fails when it is decoded."""
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IDAT") + 4
    raw[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(raw))


@pytest.mark.slow
def test_a_run_that_fails_in_its_final_evaluation_keeps_its_final_checkpoint(tmp_path):
    root = tmp_path / "images"
    for c, name in enumerate(("ant", "bee")):
        for split in ("train", "val"):
            os.makedirs(root / split / name)
            for i in range(4):
                pixels = np.full((16, 16, 3), 40 + 120 * c, np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    _corrupt_png(root / "val" / "bee" / "3.png")  # read only by the final evaluation
    args = (
        f"--workdir={tmp_path / 'w'}",
        "--config.dataset=folder",
        f"--config.data_dir={root}",
        "--config.image_size=16",
        "--config.batch_size=4",
        "--config.total_steps=3",
        "--config.checkpoint_every_steps=0",
    )
    failed = _run(*args)
    assert failed.returncode == 2, failed.stderr[-2000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot decode image ") and "3.png" in last
    assert _checkpoints(tmp_path / "w") == ["3"]  # complete: no .orbax-checkpoint-tmp left

    Image.fromarray(np.full((16, 16, 3), 160, np.uint8)).save(root / "val" / "bee" / "3.png")
    rerun = _run(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "at step 3" in rerun.stderr and "step 1/3" not in rerun.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "w")] == [3, 3]  # train, eval: once each


def test_an_error_right_after_a_save_lets_the_save_complete(tmp_path, monkeypatch):
    """Any exception (here in the final evaluation, just after the final save started): the
    checkpoint being written completes before the error leaves the run."""

    def fails(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(loop, "evaluate", fails)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        classification.train_and_evaluate(_config(checkpoint_every_steps=0), str(tmp_path))
    assert _checkpoints(tmp_path) == ["4"]  # not 4.orbax-checkpoint-tmp


def test_sigterm_during_the_final_evaluation_stops_and_the_rerun_evaluates(tmp_path, monkeypatch):
    workdir = str(tmp_path / "w")
    batches = _signal_at(data.eval_batches, 0, signal.SIGTERM)
    monkeypatch.setattr(data, "eval_batches", batches)
    result = classification.train_and_evaluate(_config(), workdir)
    assert result == {"step": 4, "stopped": "SIGTERM"}
    assert all("eval/top1" not in r for r in read_metrics(workdir))
    monkeypatch.undo()
    final = classification.train_and_evaluate(_config(), workdir)
    assert final["step"] == 4 and [r["step"] for r in read_metrics(workdir)] == [2, 4, 4]


@pytest.mark.slow
def test_sigterm_while_the_program_imports_stops_cleanly(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.digits", f"--workdir={tmp_path}", "--config.seed=5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)  # importing JAX and the program takes seconds
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert "stopped at step 1/800 on SIGTERM" in err
    assert _checkpoints(tmp_path) == ["1"]


def test_disk_full_names_the_checkpoint_that_survives(tmp_path, monkeypatch):
    real_save = checkpoint.Checkpointer.save

    def save(self, step, *args, **kwargs):
        if step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    with pytest.raises(UserError) as info:
        classification.train_and_evaluate(_config(), str(tmp_path))
    message = str(info.value)
    assert "is full" in message and f"step 2 in {tmp_path}/checkpoints" in message
    assert _checkpoints(tmp_path) == ["2"]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints and logs


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty_metadata", "truncated_array"])
def test_a_damaged_latest_checkpoint_is_skipped_for_the_newest_that_reads(
    tmp_path, finished_run, damage
):
    workdir = tmp_path / "b"
    reference = _copy(finished_run, workdir)
    records = without_timings(read_metrics(workdir))
    state_dir = workdir / "checkpoints" / "4" / "state"
    if damage == "empty_metadata":
        (state_dir / "_METADATA").write_text("")
    else:
        largest = max(state_dir.rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
        largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    with pytest.raises(UserError, match="^the checkpoint at step 4 in .* cannot be read"):
        checkpoint.load_model(str(workdir), 4)  # `jaxvision evaluate --step=4`: one line
    again = classification.train_and_evaluate(_config(), str(workdir))
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in reference.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(workdir)) == records
    assert _checkpoints(workdir) == ["2", "4", "4.damaged"]  # kept for inspection


def _flip_bytes(state_dir, count: int = 64):
    """XORs `count` bytes in the middle of the largest file under `state_dir` (its size kept)."""
    largest = max(state_dir.rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    raw = bytearray(largest.read_bytes())
    middle = len(raw) // 2
    for i in range(middle, middle + count):
        raw[i] ^= 0x5A
    largest.write_bytes(bytes(raw))


@pytest.mark.slow
def test_a_checkpoint_with_flipped_bytes_is_set_aside_for_the_newest_that_verifies(
    tmp_path, finished_run, capsys
):
    workdir = tmp_path / "run"
    reference = _copy(finished_run, workdir)
    records = without_timings(read_metrics(workdir))
    _flip_bytes(workdir / "checkpoints" / "4" / "state")
    # Readers say what they skip and refuse the damaged step itself.
    assert Predictor.from_workdir(str(workdir)).step == 2
    assert "skipped a damaged checkpoint of " in capsys.readouterr().err
    with pytest.raises(
        UserError,
        match=r"the checkpoint at step 4 in .* is damaged \(models/.* differs from the digest",
    ):
        checkpoint.load_model(str(workdir), 4)
    assert _checkpoints(workdir) == ["2", "4"]  # readers move nothing
    again = classification.train_and_evaluate(_config(), str(workdir))
    err = capsys.readouterr().err
    assert "skipped a damaged checkpoint, step 4 (" in err and "resumed from" in err
    assert "at step 2" in err
    assert _checkpoints(workdir) == ["2", "4", "4.damaged"]
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in reference.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(workdir)) == records


@pytest.mark.slow
def test_a_loss_that_is_not_finite_right_after_a_resume_names_the_checkpoint(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    classification.train_and_evaluate(_config(total_steps=2), workdir)
    restore = checkpoint.Checkpointer.restore_newest_readable

    def unsound(self, abstract):  # values that verify but cannot be trained from
        state, meta, skipped = restore(self, abstract)
        huge = lambda x: x * 1e38 if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return jax.tree.map(huge, state), meta, skipped

    monkeypatch.setattr(checkpoint.Checkpointer, "restore_newest_readable", unsound)
    with pytest.raises(UserError) as raised:
        classification.train_and_evaluate(_config(), workdir)
    message = str(raised.value)
    assert " at step 3, 1 step after loading the checkpoint at step 2 in " in message
    assert "suspect the loaded values first" in message
    assert "Lower the learning rate" not in message
    assert _checkpoints(workdir) == ["2"]


@pytest.mark.slow
def test_a_line_cut_short_in_the_log_does_not_stop_the_rerun(tmp_path):
    workdir = str(tmp_path)
    classification.train_and_evaluate(_config(total_steps=2), workdir)
    records = read_metrics(workdir)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "train/lo')  # a kill in the middle of a write
    classification.train_and_evaluate(_config(), workdir)
    assert [r["step"] for r in read_metrics(workdir)][:2] == [r["step"] for r in records]
    assert [r["step"] for r in read_metrics(workdir)] == [2, 2, 4, 4]


def test_rerunning_a_finished_run_adds_nothing(tmp_path, finished_run):
    workdir = str(tmp_path / "run")
    final = _copy(finished_run, workdir)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = classification.train_and_evaluate(_config(), workdir)
    # The final evaluation as logged (6 decimals, as the `final:` line prints it).
    assert again["eval/top1"] == round(final["eval/top1"], 6) and again["step"] == 4
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_a_refused_resume_changes_nothing(tmp_path, finished_run):
    workdir = str(tmp_path / "run")
    _copy(finished_run, workdir)
    stored = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(UserError, match="written with seed=0, this run asks for seed=1"):
        classification.train_and_evaluate(_config(seed=1), workdir)
    other = _config(model="resnet18")
    other.model_kwargs = {"stem": "small", "width": 8}
    with pytest.raises(UserError, match="with model=simple_cnn, .* asks for model=resnet18, "):
        classification.train_and_evaluate(other, workdir)
    os.remove(os.path.join(workdir, "config.json"))  # the checkpoint alone still knows
    with pytest.raises(UserError, match="holds another state .* another model"):
        classification.train_and_evaluate(other, workdir)
    classification.train_and_evaluate(_config(), workdir)
    assert (tmp_path / "run" / "config.json").read_text() == stored


def test_evaluate_leaves_a_training_runs_checkpoints_alone(tmp_path, finished_run):
    workdir = str(tmp_path / "run")
    _copy(finished_run, workdir)
    in_flight = tmp_path / "run" / "checkpoints" / "6.orbax-checkpoint-tmp-1790000000"
    in_flight.mkdir()  # what a training run's save looks like while it is being written
    assert Predictor.from_workdir(workdir).step == 4 and in_flight.is_dir()


# ---------------------------------------------------------------------------------------------
# One run per workdir


@pytest.mark.slow
def test_a_busy_workdir_is_refused_and_a_killed_runs_lock_is_not(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from jaxvision.workdir import open_workdir; "
            f"lock = open_workdir({str(tmp_path)!r}); print('locked', flush=True); time.sleep(120)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = _run(f"--workdir={tmp_path}", "--config.total_steps=2")
        assert busy.returncode == 2
        line = busy.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: workdir {tmp_path} is in use by process {holder.pid} on ")
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    lock = workdirs.open_workdir(str(tmp_path))  # the dead process's lock went with it
    lock.release()


# ---------------------------------------------------------------------------------------------
# Values and places that are refused


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("batch_size", 0, "batch_size=0 is out of range: it must be a whole number >= 1"),
        ("image_size", 0, "image_size=0 is out of range"),
        ("total_steps", -1, "total_steps=-1 is out of range: it must be a whole number >= 0"),
        ("learning_rate", -1.0, "learning_rate=-1.0 is out of range: it must be a number >= 0"),
        ("keep_checkpoints", 0, "keep_checkpoints=0 is out of range"),
        ("label_smoothing", 1.0, "label_smoothing=1.0 is out of range: it must be in [0, 1)"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_is_written(
    tmp_path, field, value, expected
):
    with pytest.raises(UserError, match=expected.replace("[", r"\[").replace(")", r"\)")):
        classification.train_and_evaluate(_config(**{field: value}), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_checkpoint_every_steps_zero_saves_only_the_final_step(tmp_path):
    classification.train_and_evaluate(_config(checkpoint_every_steps=0), str(tmp_path))
    assert _checkpoints(tmp_path) == ["4"]


def test_workdirs_that_cannot_be_used(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a file: pass a directory"):
        workdirs.open_workdir(str(a_file))
    with pytest.raises(UserError, match="gs://bucket/run is a URL.*mount the bucket"):
        workdirs.open_workdir("gs://bucket/run")
    assert not os.path.exists("gs:")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(workdirs, "open", read_only, raising=False)
    with pytest.raises(UserError, match=r"cannot write to workdir .*\(Read-only file system\)"):
        workdirs.open_workdir(str(tmp_path / "ro"))


def test_metrics_never_carry_non_standard_json(tmp_path):
    from jaxvision.train.reporting import MetricsLog

    log = MetricsLog(str(tmp_path), total_steps=1, tensorboard=False)
    log.write(1, {"eval/loss": float("inf"), "eval/top1": float("nan"), "eval/top5": 1.0})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(text) == {"step": 1, "eval/loss": None, "eval/top1": None, "eval/top5": 1.0}
    assert "Infinity" not in text and "NaN" not in text


@pytest.mark.slow
def test_a_run_on_a_folder_with_unreadable_files_says_which_it_left_out(tmp_path, capsys):
    for c, name in enumerate(("ant", "bee")):
        os.makedirs(tmp_path / "images" / name)
        for i in range(4):
            pixels = np.full((16, 16, 3), 40 + 120 * c, np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    (tmp_path / "images" / "bee" / "notes.png").write_text("not an image")
    config = _config(
        dataset="folder", data_dir=str(tmp_path / "images"), image_size=16, total_steps=2
    )
    assert classification.train_and_evaluate(config, str(tmp_path / "w"))["step"] == 2
    err = capsys.readouterr().err
    assert "left out 1 unreadable image file of " in err and "bee/notes.png (not an image)" in err
    config.data_strict = True
    with pytest.raises(UserError, match="1 unreadable image file.*bee/notes.png"):
        classification.train_and_evaluate(config, str(tmp_path / "w2"))


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path, monkeypatch):
    batches = _signal_at(classification.data.train_batches, 1, signal.SIGINT)
    monkeypatch.setattr(classification.data, "train_batches", batches)
    # As in a terminal: a suite started as a shell's background job has SIGINT ignored, which a
    # run rightly leaves ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = classification.train_and_evaluate(_config(), str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result == {"step": 2, "stopped": "SIGINT"} and _checkpoints(tmp_path) == ["2"]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"model_kwargs": {"dropout_rate": 2.0}}, "model_kwargs.dropout_rate=2.0 is out of range"),
        ({"test_split": "val"}, "the digits hold out test_fraction of each class"),
        ({"mesh": (("foo", -1),)}, "has unknown axis foo: name each axis once"),
        ({"layer_decay": 0.5}, "layer_decay is for ViTs .*'simple_cnn' has no such blocks"),
    ],
)
def test_other_refused_settings(tmp_path, overrides, expected):
    with pytest.raises(UserError, match=expected):
        classification.train_and_evaluate(_config(**overrides), str(tmp_path))
