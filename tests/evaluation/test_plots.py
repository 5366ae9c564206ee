"""Plots write PNGs that PIL opens; TensorBoard writes event files without TensorFlow."""

import glob
import json
import os
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxvision.evaluation import plots
from jaxvision.train.reporting import MetricsLog
from jaxvision.train.tensorboard import TensorBoardWriter


def _open_png(path):
    assert os.path.getsize(path) > 1024
    image = Image.open(path)
    assert image.format == "PNG" and image.mode in ("RGB", "RGBA")
    return image


@pytest.mark.parametrize("k", [5, 30, 1000])
def test_plot_confusion_writes_a_png(tmp_path, k):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, 20 * k)
    preds = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, k, labels.size))
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    confusion[k - 1] = 0  # a class with no examples must not divide by zero
    names = [f"class_{i}" for i in range(k)] if k <= 30 else None
    path = str(tmp_path / "plots" / f"confusion_{k}.png")
    plots.plot_confusion(confusion, names, path)
    width, height = _open_png(path).size
    # Roughly square, and big enough for a pixel per class at K = 1000.
    assert 0.7 < width / height < 1.5
    assert min(width, height) >= (1000 if k == 1000 else 300)


def test_plot_confusion_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        plots.plot_confusion(np.eye(3), ["a", "b"], str(tmp_path / "c.png"))


def test_plot_curves_writes_three_panels(tmp_path):
    log = tmp_path / "metrics.jsonl"
    with open(log, "w") as f:
        for step in range(1, 101):
            record = {"step": step, "train/loss": 2.0 / step, "train/top1": 1 - 1 / step}
            record["train/lr"] = 0.1 * step / 100
            f.write(json.dumps(record) + "\n")
            if step % 25 == 0:
                f.write(json.dumps({"step": step, "eval/loss": 1.0, "eval/top1": 0.5}) + "\n")
    path = str(tmp_path / "curves.png")
    plots.plot_curves(str(log), path)
    width, height = _open_png(path).size
    assert width > 2 * height  # three panels side by side
    assert plots.read_metrics(str(log))[24]["step"] == 25


def test_tensorboard_writes_events_without_tensorflow(tmp_path):
    writer = TensorBoardWriter(str(tmp_path / "tb"))
    writer.write(1, {"train/loss": jnp.float32(0.5), "train/lr": 0.1, "skip": np.ones(3)})
    writer.write(2, {"train/loss": 0.25})
    writer.close()
    events = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert len(events) == 1
    with open(events[0], "rb") as f:
        data = f.read()
    assert b"train/loss" in data and b"train/lr" in data and b"skip" not in data
    assert "tensorflow" not in sys.modules


def _events(path):
    """The Event protos of a TFRecord event file (length, crc, payload, crc per record)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            events.append(Event.FromString(f.read(length)))
            f.read(4)
    return events


def test_resumed_log_hides_the_interrupted_runs_later_events(tmp_path):
    first = MetricsLog(str(tmp_path), total_steps=10)
    first.truncate_after(0)
    for step in (2, 4, 6):  # interrupted after step 6; its last checkpoint was step 4
        first.write(step, {"train/loss": 1.0 / step})
    first.close()

    resumed = MetricsLog(str(tmp_path), total_steps=10)
    resumed.truncate_after(4)
    resumed.write(6, {"train/loss": 0.2})
    resumed.close()

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6]
    runs = []
    for path in glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*")):
        events = _events(path)
        starts = [e.step for e in events if e.HasField("session_log")]
        runs.append((starts, [e.step for e in events if e.HasField("summary")]))
    # Each run's file opens with TensorBoard's restart marker at its first step: reading the
    # resumed run's file, TensorBoard purges the interrupted run's events from step 5 on.
    assert sorted(runs) == [([1], [2, 4, 6]), ([5], [6])]
