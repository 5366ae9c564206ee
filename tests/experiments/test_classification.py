"""The experiments end to end: the Quickstart digits job and exact resume, the ImageNet recipe's
smoke path on TFDS mock data, the user's own image folder, and every bad-input message."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.experiments.helpers import (
    RESNET_DIGITS,
    devices,
    load_config,
    parse_final,
    read_metrics,
    run_module,
    without_timings,
)
from tests.experiments.tiny_models import tiny_model

DIGITS_ARGS = (
    "--config.total_steps=40",
    "--config.log_every_steps=10",
    "--config.checkpoint_every_steps=20",
)


@pytest.mark.slow
def test_digits_end_to_end_then_exact_resume(tmp_path, capsys):
    from experiments.classification import train_and_evaluate

    def digits_config():  # the Quickstart's config with DIGITS_ARGS
        return load_config(
            "classification/simple_cnn_digits.py",
            total_steps=40,
            log_every_steps=10,
            checkpoint_every_steps=20,
        )

    workdir = str(tmp_path / "digits")
    final = train_and_evaluate(digits_config(), workdir)
    err = capsys.readouterr().err
    assert final["step"] == 40
    assert {"step", "elapsed_s", "eval/loss", "eval/top1", "eval/top5"} <= set(final)
    # 40 steps already learn most digits: 0.906-0.964 over seeds 0-4 on AMD EPYC, chance is 0.1.
    assert final["eval/top1"] > 0.75
    assert final["eval/top5"] >= final["eval/top1"]
    # Progress lines on stderr: step/total, loss, img/s, ETA.
    assert "step 20/40 (50%) loss " in err and " img/s ETA " in err

    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["total_steps"] == 40
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [10, 20, 30, 40]
    assert {"train/loss", "train/top1", "train/lr", "train/img_per_s"} <= set(train[0])
    assert records[-1]["step"] == 40 and "eval/top1" in records[-1]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "40"]

    # Lose everything after step 20, as a crash would; the Quickstart command rerun in a fresh
    # process continues from 20 and must reproduce the uninterrupted run exactly (same batches,
    # same updates, same log), its final line included.
    shutil.rmtree(os.path.join(workdir, "checkpoints", "40"))
    resumed = run_module("experiments.digits", f"--workdir={workdir}", *DIGITS_ARGS, check=True)
    assert "resumed from" in resumed.stderr
    assert "step 10/40" not in resumed.stderr
    again = parse_final(resumed.stdout)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: round(v, 6) if isinstance(v, float) else v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(workdir)) == without_timings(records)

    # A finished run rerun does no training: it reports the same final evaluation.
    finished = train_and_evaluate(digits_config(), workdir)
    assert finished["eval/top1"] == again["eval/top1"] == round(final["eval/top1"], 6)


@pytest.mark.slow
def test_config_overrides_reach_the_run(tmp_path):
    workdir = str(tmp_path / "w")
    result = run_module(
        "experiments.train",
        RESNET_DIGITS,
        f"--workdir={workdir}",
        "--config.total_steps=3",
        "--config.batch_size=32",
        "--config.seed=7",
        "--config.model=simple_cnn",
        "--config.model_kwargs.dropout_rate=0.25",  # an option the config file does not set
        "--config.log_every_steps=1",
        check=True,
    )
    assert parse_final(result.stdout)["step"] == 3
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert (config["total_steps"], config["batch_size"], config["seed"]) == (3, 32, 7)
    assert config["model_kwargs"]["dropout_rate"] == 0.25
    assert [r["step"] for r in read_metrics(workdir) if "train/loss" in r] == [1, 2, 3]


@pytest.mark.slow
def test_imagenet_recipe_smoke_on_mock_data(tmp_path, mock_tfds):
    from experiments.classification import train_and_evaluate

    config = load_config(
        "classification/resnet50_imagenet.py",
        total_steps=2,
        batch_size=4,
        image_size=32,
        worker_count=0,
        log_every_steps=1,
        data_dir=str(tmp_path / "tfds"),
    )
    with tiny_model(config):  # the recipe's program on a shallow ResNet-50 (Bottleneck blocks)
        final = train_and_evaluate(config, str(tmp_path / "r50"))  # 6 mock examples per split
    assert final["step"] == 2
    assert np.isfinite(final["eval/loss"])
    assert 0.0 <= final["eval/top1"] <= final["eval/top5"] <= 1.0
    assert os.listdir(tmp_path / "r50" / "checkpoints") == ["2"]
    assert "tensorflow" not in sys.modules


def _write_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=(20, 16)):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = np.full((*size[::-1], 3), 60 * c, np.uint8)
            pixels += rng.integers(0, 40, pixels.shape, dtype=np.uint8)
            ext = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(root / name / f"{i}.{ext}")


@pytest.mark.slow
def test_folder_dataset_trains(tmp_path):
    from experiments.classification import train_and_evaluate

    _write_folder(tmp_path / "images")
    config = load_config(
        "classification/resnet18_digits.py",
        dataset="folder",
        data_dir=str(tmp_path / "images"),
        model="simple_cnn",
        image_size=16,
        crop="inception",
        flip=True,
        eval_crop_ratio=0.875,
        batch_size=6,
        total_steps=3,
        log_every_steps=1,
    )
    config.model_kwargs = {}
    final = train_and_evaluate(config, str(tmp_path / "w"))
    assert final["step"] == 3
    assert np.isfinite(final["eval/loss"])


def _bad(tmp_path, *args, env=None):
    """The last stderr line of `python -m experiments.train` with `args`, which must fail as bad
    input does: exit status 2, one `error: ...` line, no traceback."""
    config = [] if any(a.startswith("--config=") for a in args) else [RESNET_DIGITS]
    result = run_module("experiments.train", *config, f"--workdir={tmp_path / 'w'}", *args, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ")
    return lines[-1]


def _refused(tmp_path, name="classification/resnet18_digits.py", **overrides):
    """The message of the UserError that the program raises for the config file `name` with
    `overrides`, trained in this process: what `_bad` would print after `error: ` (the program
    reports every UserError that way, see test_bad_input_batch_not_divisible_by_devices)."""
    from experiments.classification import train_and_evaluate
    from jaxvision.errors import UserError

    with pytest.raises(UserError) as raised:
        train_and_evaluate(load_config(name, **overrides), str(tmp_path / "w"))
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.slow
def test_bad_input_unknown_config_key(tmp_path):
    line = _bad(tmp_path, "--config.totl_steps=3")
    assert "unknown config key 'totl_steps'" in line and "total_steps" in line


def test_bad_input_unknown_model(tmp_path):
    line = _refused(tmp_path, model="resnet51")
    assert "unknown model 'resnet51'" in line and "resnet50" in line


def test_bad_input_unknown_dataset(tmp_path):
    line = _refused(tmp_path, dataset="not_a_dataset")
    assert "unknown dataset 'not_a_dataset'" in line and "digits" in line


def test_bad_input_tfds_dataset_missing_from_data_dir(tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    line = _refused(tmp_path, dataset="cifar10", data_dir=str(data_dir))
    assert "tfds build cifar10" in line and str(data_dir) in line
    assert "pip install -e '.[tfds-build]'" in line  # building needs TensorFlow
    assert not any(data_dir.rglob("*.array_record*"))  # nothing was downloaded or built


def test_bad_input_empty_image_folder(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    line = _refused(tmp_path, dataset="folder", data_dir=str(root))
    assert "no class folders" in line and "<class>/*.jpg" in line
    (root / "cat").mkdir()
    line = _refused(tmp_path, dataset="folder", data_dir=str(root))
    assert "no .jpg/.jpeg/.png images" in line and "cat" in line


@pytest.mark.slow
def test_bad_input_batch_not_divisible_by_devices(tmp_path):
    # A UserError raised by the program itself (not by the flag parsing) in a fresh process
    # with 8 devices: reported as one `error:` line with exit status 2.
    env = devices(8)
    line = _bad(tmp_path, "--config.batch_size=12", env=env)
    assert "batch_size=12 is not divisible by the 8 devices" in line


@pytest.mark.slow
def test_bad_input_missing_workdir():
    result = run_module("experiments.train", RESNET_DIGITS)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --workdir is required")


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["--config.batch_size=abc", "--config=/nonexistent/config.py"])
def test_bad_input_malformed_flags(tmp_path, bad):
    line = _bad(tmp_path, bad)
    if "abc" in bad:
        assert "--config.batch_size=abc" in line and "invalid literal" in line
    else:
        assert "config file '/nonexistent/config.py' not found" in line


@pytest.mark.slow
def test_bad_input_unknown_model_option(tmp_path):
    line = _bad(tmp_path, "--config.model_kwargs.widht=8")
    assert "model 'resnet18' has no option 'widht'" in line and "width" in line


def test_bad_input_fine_tuning_without_weights(tmp_path):
    line = _refused(tmp_path, "classification/resnet50_folder.py", data_dir="/unused")
    assert "--config.init_from" in line and "from scratch" in line


def test_bad_input_vit_patch_larger_than_the_images(tmp_path):
    line = _refused(tmp_path, model="vit_ti16")
    assert "image_size 8 is not a multiple of its patch stride 16" in line
    assert "set image_size to a multiple of 16" in line
