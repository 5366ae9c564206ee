"""The pointing game: exact scores on hand-made maps (ties, box edges, several boxes), boxes
moved as the preprocessing moves the image, and `jaxvision explain-checks` scoring a classifier
of the shapes, whose test records carry each object's box."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from experiments.classification import train_and_evaluate
from jaxvision.data import open_dataset
from jaxvision.data.transforms import center_crop_boxes
from jaxvision.explain import ModelFunction, checks, explain
from jaxvision.predictor import Predictor
from tests.experiments.helpers import load_config
from tests.explain.conftest import jaxvision


def _peak(row, col, side=8):
    heatmap = np.zeros((side, side), np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_pointing_game_on_hand_made_maps():
    tie = np.zeros((8, 8), np.float32)
    tie[1, 1] = tie[6, 6] = 0.7  # two maxima: one inside the box, one outside
    maps = np.stack([_peak(2, 3), _peak(0, 0), np.full((8, 8), 0.2), tie])
    boxes = np.array([[3, 2, 4, 3], [1, 1, 8, 8], [0, 0, 4, 2], [0, 0, 3, 3]], np.float32)
    hits = checks.pointing_game(maps, boxes)
    # Inside a one-pixel box; outside; a constant map: the box's 8 of 64 pixels; half a tie.
    np.testing.assert_array_equal(hits, [1.0, 0.0, 0.125, 0.5])
    assert hits.mean() == 0.40625
    # The box's right and bottom edges are where the next pixel starts: (2, 4) is outside.
    assert checks.pointing_game(_peak(2, 4)[None], boxes[:1]).tolist() == [0.0]
    # A pixel is inside when its centre is: a box over columns 2.6..3.4 holds no centre.
    assert checks.pointing_game(_peak(0, 3)[None], [[2.6, 0, 3.4, 1]]).tolist() == [0.0]
    assert checks.pointing_game(_peak(0, 3)[None], [[2.5, 0, 3.5, 1]]).tolist() == [1.0]
    # Several boxes per image: any of them; an image without boxes never hits.
    several = [np.array([[0, 0, 1, 1], [5, 5, 8, 8]]), np.zeros((0, 4))]
    peaks = np.stack([_peak(6, 7), _peak(6, 7)])
    assert checks.pointing_game(peaks, several).tolist() == [1.0, 0.0]
    # Any scale, negative values too: only the maximum's place counts.
    assert checks.pointing_game(-5 + 3 * maps[:1], boxes[:1]).tolist() == [1.0]
    with pytest.raises(ValueError, match="3 boxes for 4 heat maps"):
        checks.pointing_game(maps, boxes[:3])
    with pytest.raises(ValueError, match=r"must be \[N, H, W\], got shape \(8, 8\)"):
        checks.pointing_game(maps[0], boxes[:1])
    with pytest.raises(ValueError, match="heat map 0 has non-finite values"):
        checks.pointing_game(np.full((1, 8, 8), np.nan), boxes[:1])


def test_boxes_follow_the_center_crop():
    # 100 high, 80 wide, to 40 at crop ratio 1: the central 80 x 80 (rows 10..90), halved.
    moved = center_crop_boxes(np.array([[8, 20, 40, 60], [0, 0, 80, 10]]), 100, 80, 40, 1.0)
    np.testing.assert_array_equal(moved, [[4, 5, 20, 25], [0, 0, 40, 0]])
    # Same scale: resize_center_crop's plain crop, rows 3..67 of 70 (clipped at the top).
    np.testing.assert_array_equal(
        center_crop_boxes([[0, 0, 10, 10]], 70, 64, 64, 1.0), [[0, 0, 10, 7]]
    )
    # The ImageNet crop: the central 56 of 64, scaled to 28.
    np.testing.assert_allclose(
        center_crop_boxes([[4, 4, 60, 60]], 64, 64, 28, 0.875), [[0, 0, 28, 28]]
    )


TINY = dict(
    dataset_options={"image_size": 64, "num_train": 96, "num_test": 16},
    batch_size=32,
    total_steps=6,
    warmup_epochs=0.0,
    log_every_steps=1000,
    checkpoint_every_steps=0,
)


@pytest.fixture(scope="module")
def shapes_run(session_cache):
    """The workdir of a few steps of the shapes ResNet at 64 px, trained once per session."""

    def build(folder):
        config = load_config("classification/resnet18_shapes.py", **TINY)
        return train_and_evaluate(config, f"{folder}/run")

    folder, _ = session_cache.get("shapes_classifier", build)
    return f"{folder}/run"


@pytest.mark.slow
def test_explain_checks_scores_the_pointing_game(shapes_run, digits_run, tmp_path, capsys):
    """`jaxvision explain-checks`, run in this process (its exit status and stderr are what a
    shell sees: tests/explain/test_cli.py checks one in a fresh process)."""
    out = str(tmp_path / "pictures")
    code, stdout, stderr = jaxvision(
        capsys,
        "explain-checks",
        f"--workdir={shapes_run}",
        "--images=8",
        "--methods=gradient,gradcam",
        "--checks=pointing_game",
        "--pictures=3",
        f"--out={out}",
    )
    assert code == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert lines[0] == "resnet18 at step 6, 8 test images"
    # The maps that know nothing: a constant one scores the boxes' mean share of the image.
    test = open_dataset("shapes_classification", options=TINY["dataset_options"]).test
    boxes = [test[i]["boxes"] for i in range(8)]
    share = np.mean([(b[0, 2] - b[0, 0]) * (b[0, 3] - b[0, 1]) / 64**2 for b in boxes])
    assert lines[1].startswith(f"pointing game of maps that know nothing: constant map {share:.3f}")
    # Each method's score is the pointing game of its maps on those images and boxes.
    fn = ModelFunction.of(Predictor.from_workdir(shapes_run))
    images = [test[i]["image"] for i in range(8)]
    for line, method in zip(lines[2:4], ("gradient", "gradcam"), strict=True):
        score = checks.pointing_game(explain(fn, images, method=method).heatmaps, boxes).mean()
        assert re.fullmatch(
            rf"{method}: pointing game {score:.3f}; [\d.]+ s with compilation", line
        )
    assert lines[4] == f"heat maps of 3 images -> {os.path.join(out, 'heatmaps.png')}"
    # The image row and one row per method, 3 images of 64 px drawn at twice their size.
    picture = Image.open(os.path.join(out, "heatmaps.png"))
    assert picture.size == (150 + 3 * 130, 3 * 130)
    # A run whose test records carry no boxes cannot play.
    workdir, _ = digits_run
    code, _, stderr = jaxvision(
        capsys, "explain-checks", f"--workdir={workdir}", "--checks=pointing_game"
    )
    assert code == 2
    assert stderr.strip().splitlines()[-1] == (
        "error: the pointing game needs the object's box in each test record, and this run's "
        "test split has none (shapes_classification has them)"
    )
    code, _, stderr = jaxvision(
        capsys, "explain-checks", f"--workdir={workdir}", "--checks=pointing"
    )
    assert code == 2
    assert stderr.strip().splitlines()[-1] == (
        "error: unknown check(s) pointing: use deletion, completeness, randomization, pointing_game"
    )
