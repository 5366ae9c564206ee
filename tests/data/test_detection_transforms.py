"""Detection transforms: boxes follow the image, torchvision's resize, determinism, batching."""

import itertools
import pickle

import numpy as np
import pytest

from jaxvision.data import detection_transforms as dt
from jaxvision.data import eval_batches, open_dataset, train_batches
from jaxvision.data.detection_transforms import DetectionEvalTransform, DetectionTrainTransform
from jaxvision.errors import UserError

RECT = (20, 10, 50, 40)  # x1, y1, x2, y2 of the white rectangle in `_example`


def _example(boxes=(RECT,), height=60, width=90, crowd=None) -> dict:
    """A black image with a white rectangle at RECT, and the given boxes (default: RECT's)."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = RECT
    image[y1:y2, x1:x2] = 255
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return {
        "image": image,
        "boxes": boxes,
        "classes": np.arange(1, n + 1, dtype=np.int32),
        "iscrowd": np.zeros(n, np.int32) if crowd is None else np.asarray(crowd, np.int32),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "image_id": 7,
    }


def _bright_bounds(image: np.ndarray):
    """(x1, y1, x2, y2) pixel-edge bounds of the white pixels, or None."""
    bright = image.min(2) > 160  # above the zoom-out fill (123, 117, 104) and the black
    if not bright.any():
        return None
    rows, cols = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


@pytest.mark.parametrize(
    "transform",
    [
        DetectionTrainTransform(96, min_size=64, jitter=(40, 96), crop=(0.4, 1.0)),
        DetectionTrainTransform(64, zoom_out=True, iou_crop=True),  # SSD: fixed 64 x 64
    ],
)
def test_boxes_follow_the_rectangle(transform):
    kept = 0
    for seed in range(40):
        out = transform(_example(), np.random.default_rng(seed))
        h, w = out["size"]
        assert out["image"].shape == (transform.canvas, transform.canvas, 3)
        assert not out["image"][h:].any() and not out["image"][:, w:].any()  # zero padding
        bounds = _bright_bounds(out["image"])
        if len(out["boxes"]):
            kept += 1
            # Bilinear edges blur by a pixel of the resized image at most.
            np.testing.assert_allclose(out["boxes"][0], bounds, atol=1.01)
            assert out["classes"].tolist() == [1]
        elif bounds is not None and transform.crop is not None:
            # Dropped by the crop: under a quarter of the rectangle (scaled) was left.
            visible = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
            assert visible < 0.25 * 900 * out["scale"].prod() + 2 * (bounds[2:] - bounds[:2]).sum()
    assert kept > 20


def test_eval_maps_back_exactly_with_scale():
    example = _example(boxes=[RECT, (0, 0, 90, 60)], crowd=[0, 1])
    for transform in (DetectionEvalTransform(64, min_size=40), DetectionEvalTransform(48)):
        out = transform(example)
        sy, sx = out["scale"]
        h, w = out["size"]
        assert (h, w) == ((40, 60) if transform.min_size else (48, 48))
        np.testing.assert_allclose((sy, sx), (h / 60, w / 90), rtol=1e-6)
        back = out["boxes"] / np.array([sx, sy, sx, sy])
        np.testing.assert_allclose(back, example["boxes"], rtol=1e-5)
        np.testing.assert_allclose(out["boxes"][0], _bright_bounds(out["image"]), atol=1.01)
        # Crowd boxes stay for the evaluator; area stays in input pixels.
        assert out["iscrowd"].tolist() == [0, 1] and out["mask"] is True
        np.testing.assert_array_equal(out["area"], example["area"])
        assert out["scale"].dtype == np.float32 and out["size"].dtype == np.int32


# torchvision 0.29's GeneralizedRCNNTransform.resize on [3, h, w] zeros with the box (10, 20,
# 30, 40): (min_size, max_size), (h, w) -> resized (h, w), box.
TORCHVISION_RESIZE = [
    ((800, 1333), (480, 640), (800, 1066), (16.65625, 33.333332, 49.96875, 66.666664)),
    ((800, 1333), (427, 640), (800, 1199), (18.734375, 37.470726, 56.203125, 74.941452)),
    ((800, 1333), (1000, 100), (1333, 133), (13.3, 26.66, 39.9, 53.32)),
    ((800, 1333), (333, 500), (800, 1201), (24.02, 48.04805, 72.06, 96.0961)),
    ((320, 512), (480, 640), (320, 426), (6.65625, 13.333334, 19.96875, 26.666668)),
    ((320, 512), (1000, 100), (512, 51), (5.1, 10.24, 15.3, 20.48)),
    ((320, 512), (612, 612), (320, 320), (5.228758, 10.457517, 15.686275, 20.915033)),
]


@pytest.mark.parametrize(("limits", "shape", "resized", "box"), TORCHVISION_RESIZE)
def test_resize_matches_torchvision(limits, shape, resized, box):
    image = np.zeros((*shape, 3), np.uint8)
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    out, moved, scale, size = dt.resize_pad(image, boxes, max(limits[1], 1344), *limits)
    assert tuple(size) == resized and out.shape == (1344, 1344, 3)
    np.testing.assert_allclose(moved[0], box, rtol=1e-6)
    np.testing.assert_allclose(scale, np.array(resized) / np.array(shape), rtol=1e-7)


SSD = DetectionTrainTransform(
    64, photometric=True, zoom_out=True, iou_crop=True, crop=(0.5, 1.0), max_boxes=3
)


def test_train_is_a_function_of_the_generator_and_handles_empty_and_crowd():
    example = _example(boxes=[RECT, (0, 0, 90, 60), (5, 5, 15, 15)], crowd=[0, 1, 0])
    for seed in range(10):
        a = SSD(example, np.random.default_rng(seed))
        b = SSD(example, np.random.default_rng(seed))
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert 2 not in a["classes"].tolist()  # the crowd box is dropped in training
        assert a["boxes"].shape == (len(a["classes"]), 4) and a["boxes"].dtype == np.float32
        x1, y1, x2, y2 = a["boxes"].T
        assert (x2 > x1).all() and (y2 > y1).all() and (x2 <= a["size"][1]).all()
    outs = [SSD(example, np.random.default_rng(s))["image"] for s in range(3)]
    assert not np.array_equal(outs[0], outs[1])
    empty = _example(boxes=np.zeros((0, 4)))
    for transform in (SSD, DetectionTrainTransform(64, min_size=32, jitter=(20, 64))):
        out = transform(empty, np.random.default_rng(0))
        assert out["boxes"].shape == (0, 4) and out["classes"].shape == (0,)
        assert out["area"].dtype == np.float32 and out["iscrowd"].dtype == np.int32
    out = DetectionEvalTransform(64)(empty)
    assert out["boxes"].shape == (0, 4) and out["mask"] is True


def test_dropped_and_truncated_boxes():
    # A plain crop of the left half drops a box wholly on the right and clips one across it.
    fields = dt._records(_example(boxes=[(60, 10, 80, 20), (40, 10, 50, 20), (10, 0, 20, 5)]))
    rng = np.random.default_rng(0)
    cropped, kept = dt.random_crop(np.zeros((60, 90, 3), np.uint8), fields, rng, (1.0, 1.0), 0.5)
    assert cropped.shape == (60, 90, 3) and len(kept["boxes"]) == 3  # a full-size crop
    window, moved, share = dt._crop(np.zeros((60, 90, 3), np.uint8), fields, 0, 0, 45, 60)
    np.testing.assert_allclose(moved["boxes"][:2], [[45, 10, 45, 20], [40, 10, 45, 20]])
    np.testing.assert_allclose(share, [0, 0.5, 1])
    assert window.shape == (60, 45, 3)
    np.testing.assert_allclose(moved["area"], [0, 50, 50])
    # More boxes than max_boxes: a random subset in the original order.
    many = _example(boxes=[(i, i, i + 10, i + 10) for i in range(8)])
    out = DetectionTrainTransform(90, min_size=60, max_size=90, flip=False, max_boxes=3)(
        many, np.random.default_rng(1)
    )
    assert len(out["boxes"]) == 3 and sorted(out["classes"]) == out["classes"].tolist()
    np.testing.assert_allclose(out["boxes"][:, 2] - out["boxes"][:, 0], 10)  # scale 1
    np.testing.assert_allclose(out["area"], 100)


def test_pieces():
    example = _example()
    image, boxes = dt.hflip(example["image"], example["boxes"])
    np.testing.assert_array_equal(boxes, [[40, 10, 70, 40]])
    np.testing.assert_array_equal(_bright_bounds(image), boxes[0])
    for seed in range(6):
        image, boxes = dt.zoom_out(example["image"], example["boxes"], np.random.default_rng(seed))
        np.testing.assert_array_equal(_bright_bounds(image), boxes[0])
        assert (image.shape[0] == 60) == (image.shape[1] == 90)  # zoomed on both sides or neither
    distorted = [
        dt.photometric_distort(example["image"], np.random.default_rng(s)) for s in range(8)
    ]
    assert all(d.shape == (60, 90, 3) and d.dtype == np.uint8 for d in distorted)
    assert any(not np.array_equal(d, example["image"]) for d in distorted)
    with pytest.raises(UserError, match="jitter"):
        DetectionTrainTransform(64, jitter=(10, 20))
    with pytest.raises(UserError, match="max_size <= canvas"):
        DetectionEvalTransform(64, min_size=32, max_size=100)
    with pytest.raises(UserError, match="crop"):
        DetectionTrainTransform(64, crop=(0.5, 1.5))


def test_batches_follow_the_plan():
    ds = open_dataset("shapes", options={"num_train": 12, "num_test": 5, "image_size": 64})
    train = DetectionTrainTransform(80, min_size=64, max_size=80, jitter=(48, 80), max_boxes=8)
    assert pickle.loads(pickle.dumps(train)) == train  # what grain's worker processes receive
    batches = list(itertools.islice(train_batches(ds.train, train, global_batch_size=4, seed=0), 2))
    again = list(itertools.islice(train_batches(ds.train, train, global_batch_size=4, seed=0), 2))
    for batch, same in zip(batches, again, strict=True):
        assert all(np.array_equal(batch[k], same[k]) for k in batch)
    batch = batches[0]
    expect = {
        "image": ((4, 80, 80, 3), np.uint8),
        "boxes": ((4, 8, 4), np.float32),
        "boxes_mask": ((4, 8), np.bool_),
        "classes": ((4, 8), np.int32),
        "iscrowd": ((4, 8), np.int32),
        "area": ((4, 8), np.float32),
        "image_id": ((4,), np.int32),
        "scale": ((4, 2), np.float32),
        "size": ((4, 2), np.int32),
    }
    for key, (shape, dtype) in expect.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert (batch["classes"][~batch["boxes_mask"]] == 0).all()

    evaluation = DetectionEvalTransform(80, min_size=64, max_size=80, max_boxes=8)
    batches = list(eval_batches(ds.test, evaluation, global_batch_size=4))
    assert len(batches) == 2
    last = batches[1]
    assert last["mask"].tolist() == [True, False, False, False]
    assert last["image_id"].tolist() == [5, 0, 0, 0]
    real = evaluation(ds.test[4])
    n = len(real["boxes"])
    np.testing.assert_array_equal(last["boxes"][0, :n], real["boxes"])
    assert last["boxes_mask"][0].sum() == n and not last["boxes_mask"][1:].any()
    assert not last["image"][1:].any() and not last["scale"][1:].any()
    np.testing.assert_array_equal(last["size"][0], [64, 64])
