"""Drawn detections: class colours on the box edges, interiors untouched, tags inside the image;
grids of images of different sizes."""

import numpy as np
import pytest

from jaxvision.evaluation.draw import class_color, draw_detections, image_grid

NAMES = ["__background__", "cat", "dog", "car"]


def _grey(h=64, w=80):
    return np.full((h, w, 3), 128, np.uint8)


def test_box_edges_take_the_class_colour_and_the_interior_is_left_alone():
    image = _grey()
    drawn = draw_detections(image, [[10, 30, 40, 60]], [2], [0.87], NAMES, width=2)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (image == 128).all()  # drawn on a copy
    color = class_color(2)
    for y, x in ((45, 10), (45, 11), (45, 38), (45, 39), (30, 25), (31, 25), (59, 25)):
        assert tuple(drawn[y, x]) == color, (y, x)
    # Inside the 2-px outline and outside the box (away from the tag): untouched.
    assert (drawn[32:58, 12:38] == 128).all()
    assert (drawn[30:, 41:] == 128).all() and (drawn[61:] == 128).all()
    # The "dog 0.87" tag sits just above the box, filled with the class colour.
    tag = drawn[:30, 10:40]
    assert (tag == color).all(axis=-1).sum() > 50 and (drawn[:30, 10] == color).all(axis=-1).any()


def test_scores_below_the_threshold_and_boxes_outside_are_not_drawn():
    boxes = [[10, 10, 30, 30], [40, 10, 60, 30], [100, 100, 120, 120], [np.nan, 0, 5, 5]]
    drawn = draw_detections(
        _grey(), boxes, [1, 3, 1, 1], [0.9, 0.1, 0.9, 0.9], NAMES, score_threshold=0.3, labels=False
    )
    assert tuple(drawn[20, 10]) == class_color(1)
    assert (drawn[:, 35:] == 128).all()  # the 0.1 box and the one past the image's edge


def test_tags_stay_inside_the_image():
    # A box in the top-right corner: no room above it, none to its right.
    drawn = draw_detections(_grey(), [[70, 0, 80, 20]], [3], [0.5], NAMES)
    color = class_color(3)
    assert (drawn[:, :70] == color).all(axis=-1).any()  # the tag moved left, inside the image
    assert (drawn[25:] == 128).all()


def test_ground_truth_is_dashed_and_unlabelled():
    drawn = draw_detections(_grey(), [[10, 10, 60, 50]], [1], None, NAMES, width=1, dashed=True)
    top_edge = (drawn[10, 10:60] == class_color(1)).all(axis=-1)
    assert 0.3 < top_edge.mean() < 0.7  # dashes and gaps
    assert (drawn[:10] == 128).all()  # labels=False: no tag


def test_class_colours_are_distinct():
    colors = [class_color(c) for c in range(1, 91)]
    assert len(set(colors)) == 90
    assert class_color(5) == class_color(5)


def test_image_grid_pads_every_image_to_the_largest():
    images = [np.full((10, 20, 3), 1, np.uint8), np.full((30, 5), 2, np.uint8), _grey(8, 8)]
    grid = image_grid(images, columns=2, spacing=3, fill=255)
    assert grid.shape == (30 + 3 + 30, 20 + 3 + 20, 3)
    assert (grid[:10, :20] == 1).all() and (grid[10:30, :20] == 255).all()
    assert (grid[:30, 23:28] == 2).all() and (grid[:30, 28:] == 255).all()
    assert (grid[33:41, :8] == 128).all() and (grid[30:33] == 255).all()
    assert image_grid(images, columns=10).shape == (30, 3 * 20 + 2 * 4, 3)
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([], 4)
