"""Workdirs written before runs held named models still resume, evaluate and predict."""

import os
import shutil

import jax
import pytest

from experiments.classification import train_and_evaluate
from jaxvision.checkpoint import Checkpointer
from jaxvision.predictor import Predictor
from tests.experiments import resnet10_train
from tests.experiments.helpers import load_config, read_metrics, without_timings

TINY = dict(image_size=8, pad=1, batch_size=32, log_every_steps=2, checkpoint_every_steps=4)


def _to_legacy(workdir: str) -> None:
    """Rewrites the workdir's checkpoints in the old layout and drops model.json, as an older
    jaxvision left them."""
    directory = os.path.join(workdir, "checkpoints")
    reader = Checkpointer(directory, read_only=True)
    states = {}
    for step in reader.all_steps():
        abstract = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), reader.item_metadata(step)
        )
        states[step] = reader.restore(abstract, step)
    reader.close()
    shutil.rmtree(directory)
    writer = Checkpointer(directory, save_every_steps=0, keep=5)
    for step, (tree, meta) in states.items():
        model = tree["models"]["model"]
        old = {
            "step": tree["step"],
            "params": model["variables"]["params"],
            "batch_stats": model["variables"].get("batch_stats", {}),
            "opt_state": model["opt_state"],
            "rng": model["rng"],
            "ema_params": model.get("ema_params"),
        }
        writer.save(step, old, meta, force=True)
    writer.close()
    os.remove(os.path.join(workdir, "model.json"))


@pytest.mark.slow
def test_an_old_layout_checkpoint_resumes_to_the_same_run(tmp_path):
    config = load_config("classification/resnet18_digits.py", total_steps=8, ema_decay=0.9, **TINY)
    # A ResNet-10 (a ResNet-18 with one block per stage: BatchNorm statistics to carry over),
    # narrow: half the blocks to compile.
    config.model = resnet10_train.NAME
    config.model_kwargs.width = 8
    with resnet10_train.registered():
        _resume_an_old_layout(tmp_path, config)


def _resume_an_old_layout(tmp_path, config):
    whole = str(tmp_path / "whole")
    final = train_and_evaluate(config, whole)

    # The same run as an older jaxvision left it when stopped after its step-4 checkpoint.
    old = str(tmp_path / "old")
    shutil.copytree(whole, old)
    shutil.rmtree(os.path.join(old, "checkpoints", "8"))
    _to_legacy(old)
    reader = Checkpointer(os.path.join(old, "checkpoints"), read_only=True)
    assert "params" in reader.item_metadata(4)
    assert "mean" in reader.item_metadata(4)["batch_stats"]["bn1"]
    reader.close()
    resumed = train_and_evaluate(config, old)  # reads the old layout, writes the new one

    assert {k: v for k, v in resumed.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(old)) == without_timings(read_metrics(whole))
    assert Predictor.from_workdir(old).step == 8
