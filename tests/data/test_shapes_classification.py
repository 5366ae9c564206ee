"""The one-shape classification set: labels, boxes that bound the drawn shape, determinism."""

import pickle

import numpy as np
import pytest

from jaxvision.data import open_dataset, shapes
from jaxvision.data.shapes_classification import CLASS_NAMES
from jaxvision.errors import UserError

SIZE = 64


def test_records_labels_and_boxes():
    ds = open_dataset(
        "shapes_classification", options={"image_size": SIZE, "num_train": 50, "num_test": 10}
    )
    assert (len(ds.train), len(ds.test), ds.num_classes, ds.image_size) == (50, 10, 5, SIZE)
    assert ds.class_names == ("circle", "rectangle", "triangle", "star", "cross") == CLASS_NAMES
    assert ds.max_boxes == 1
    np.testing.assert_array_equal(ds.train.labels, np.arange(50) % 5)  # balanced, no drawing
    areas = []
    for i in range(50):
        record = ds.train[i]
        assert sorted(record) == ["boxes", "image", "label"]
        assert record["image"].dtype == np.uint8 and record["image"].shape == (SIZE, SIZE, 3)
        assert record["label"] == i % 5
        box = record["boxes"]
        assert box.dtype == np.float32 and box.shape == (1, 4)
        x1, y1, x2, y2 = box[0]
        assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
        assert np.array_equal(box, np.round(box))  # pixel edges
        areas.append((x2 - x1) * (y2 - y1) / SIZE**2)
    # Shapes from about 20 pixels to 3/5 of the side: boxes of 5% to about half the image.
    assert 0.05 < min(areas) < 0.15 and 0.35 < max(areas) < 0.7, (min(areas), max(areas))
    # Any order, any copy, any process; the seed and the split change the images.
    remote = pickle.loads(pickle.dumps(ds.train))
    for i in (7, 3, 7):
        assert np.array_equal(ds.train[i]["image"], remote[i]["image"])
        assert np.array_equal(ds.train[i]["boxes"], remote[i]["boxes"])
    assert not np.array_equal(ds.train[3]["image"], ds.test[3]["image"])
    other = open_dataset("shapes_classification", options={"seed": 1, "num_train": 5})
    assert other.image_size == SIZE and len(other.test) == 500  # the defaults
    assert not np.array_equal(ds.train[3]["image"], other.train[3]["image"])


def test_the_box_bounds_the_drawn_shape():
    for index in range(40):
        label = 1 + index % 5
        image, box, shown = shapes.render_single(0, 0, index, SIZE, label, noise=False)
        x1, y1, x2, y2 = box.astype(int)
        # Every pixel of the shape lies in the box, and each edge of the box touches it.
        assert shown[y1:y2, x1:x2].sum() == shown.sum() >= shapes.MIN_PIXELS
        inside = shown[y1:y2, x1:x2]
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # The shape is what was painted: the same generator's first draw is the bare background.
        bare, _ = shapes._background(np.random.default_rng([0, 0, index, label]), SIZE)
        painted = (image != bare).any(2)
        assert not painted[~shown].any() and painted[shown].mean() > 0.98
        # With noise, the same shape and box (noise comes last).
        noisy, same_box, same_shown = shapes.render_single(0, 0, index, SIZE, label)
        assert np.array_equal(box, same_box) and np.array_equal(shown, same_shown)


def test_options_are_checked():
    with pytest.raises(UserError, match="unknown option.*max_objects.*for 'shapes_classification'"):
        open_dataset("shapes_classification", options={"max_objects": 2})
    with pytest.raises(UserError, match="image_size must be at least 32, got 16"):
        open_dataset("shapes_classification", options={"image_size": 16})
