"""The image-text program end to end: a tiny SigLIP on the captioned shapes through the shared
loop logs its training and evaluation metrics and resumes exactly."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from experiments import image_text
from jaxvision.checkpoint import load_model
from jaxvision.errors import UserError
from tests.experiments.helpers import load_config, read_metrics, without_timings

TINY = dict(
    total_steps=4,
    log_every_steps=2,
    eval_every_steps=2,
    checkpoint_every_steps=2,
    batch_size=16,
    retrieval_pairs=24,
    warmup_epochs=0.0,
)


def _config(**overrides):
    config = load_config("image_text/siglip_tiny_shapes_captions.py", **{**TINY, **overrides})
    config.dataset_options.num_train = 64
    config.dataset_options.num_test = 32
    config.model_kwargs.image_depth = 1
    config.model_kwargs.text_depth = 1
    return config


@pytest.mark.slow
def test_tiny_captioned_run_logs_its_metrics_and_resumes_exactly(tmp_path):
    workdir = str(tmp_path / "siglip")
    final = image_text.train_and_evaluate(_config(), workdir)
    assert final["step"] == 4
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert {"train/t", "train/b", "train/lr", "train/grad_norm"} <= set(train[0])
    # SigLIP starts at t = log 10, b = -10 and AdamW moves them by about lr a step.
    assert train[0]["train/t"] == pytest.approx(10, rel=0.01)
    assert train[0]["train/b"] == pytest.approx(-10, abs=0.01)
    assert math.isfinite(train[1]["train/loss"])
    evals = [r for r in records if "eval/i2t_recall@1" in r]
    assert [r["step"] for r in evals] == [2, 4]
    names = {f"zeroshot_{g}top{k}" for g in ("", "seen_", "held_out_") for k in (1, 5)}
    names |= {f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    names |= {"retrieval_images", "retrieval_texts", "order_accuracy"}
    assert {f"eval/{n}" for n in names} == {k for k in final if k.startswith("eval/")}
    assert final["eval/retrieval_images"] == 24  # the first retrieval_pairs test pairs
    for name in names - {"retrieval_images", "retrieval_texts"}:
        assert 0 <= final[f"eval/{name}"] <= 1
    with open(os.path.join(workdir, "model.json")) as f:
        record = json.load(f)
    assert (record["task"], record["program"]) == ("image_text", "experiments.image_text")
    assert record["model_kwargs"]["text_pool"] == "argmax"  # words in CLIP's layout
    assert record["model_kwargs"]["vocab_size"] == 22

    # Lose step 4; the rerun must reproduce it from step 2: the weights and every metric.
    before = load_model(workdir, None, "model")[0]
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))
    again = image_text.train_and_evaluate(_config(), workdir)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(workdir)) == without_timings(records)
    after = load_model(workdir, None, "model")[0]
    np.testing.assert_equal(after["variables"], before["variables"])


def test_a_flipping_config_is_refused_before_anything_is_built(tmp_path):
    with pytest.raises(UserError, match="flip=True would make the captions' 'left of' false"):
        image_text.train_and_evaluate(_config(flip=True), str(tmp_path / "flip"))


def test_command_line_model_kwargs_reach_an_image_text_model(capsys):
    import ml_collections

    from jaxvision import cli

    config = ml_collections.ConfigDict({"model": "siglip_tiny"})
    cli._apply_open_overrides(config, {"model_kwargs": {"patch_size": 4}})
    assert config.model_kwargs.patch_size == 4
    with pytest.raises(SystemExit) as exit_info:
        cli._apply_open_overrides(config, {"model_kwargs": {"patch_sise": 4}})
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: --config.model_kwargs.patch_sise: model 'siglip_tiny' has no")
    assert "patch_size" in line
