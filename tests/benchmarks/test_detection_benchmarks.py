"""The detection benchmarks run on CPU at tiny sizes, without torch, and print their rows."""

import json

import pytest

from tests.experiments.helpers import TINY_SHAPES, config_flags, run_module


@pytest.mark.slow
def test_detection_benchmark_prints_its_row():
    result = run_module(
        "benchmarks.detection",
        "--model=retinanet_resnet18_fpn_small",
        "--height=64",
        "--width=96",
        "--batch=2",
        "--repeats=1",
        "--torch=no",
        '--model_kwargs={"head_norm": "group"}',
        check=True,
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["model"] == "retinanet_resnet18_fpn_small" and row["batch"] == 2
    assert list(row["ms"]) == ["jaxvision"] and row["ms"]["jaxvision"] > 0
    assert "batch 2 at 64x96" in result.stdout


@pytest.mark.slow
def test_step_time_prints_the_recipes_step():
    """The recipe's own step on its own batches, at tiny settings from the command line: the
    tests' tiny shapes run (TINY_SHAPES), whose init and step programs the session's shared run
    (tests/conftest.py: shapes_detector_run) compiles too: one of the two finds them cached."""
    tiny = [
        "--config=experiments/configs/detection/retinanet_shapes.py",
        *config_flags(TINY_SHAPES),
        # An option the recipe leaves unset, at its default (the same program).
        "--config.model_kwargs.anchor_size=32.0",
    ]
    result = run_module("benchmarks.detection_step_time", *tiny, "--steps=2", check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["model"] == "retinanet_resnet18_fpn_small" and row["steps"] == 2
    assert row["batch_size"] == 8 and row["image_size"] == 64
    assert 0 < row["step_s_min"] <= row["step_s_median"]
    assert row["img_per_s"] == pytest.approx(8 / row["step_s_median"], rel=1e-2, abs=0.1)


@pytest.mark.slow
def test_two_stage_benchmarks_print_their_rows():
    """Faster R-CNN's predict (it places its own anchors on a non-square input) and RoIAlign's
    forward + backward, without torch: jaxvision's rows only."""
    result = run_module(
        "benchmarks.detection",
        "--model=fasterrcnn_resnet18_fpn_small",
        "--height=64",
        "--width=96",
        "--batch=2",
        "--repeats=1",
        "--torch=no",
        check=True,
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["model"] == "fasterrcnn_resnet18_fpn_small" and row["ms"]["jaxvision"] > 0
    result = run_module(
        "benchmarks.roi_align",
        "--image=64",
        "--rois=8",
        "--channels=4",
        "--repeats=1",
        "--torch=no",
        check=True,
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(row["ms"]) == ["jaxvision"] and row["rois"] == 8
