"""YOLO's augmentation: the reference's arithmetic (fixture), boxes on their objects, letterbox
boxes mapped back through the evaluator, determinism per (seed, position), close-mosaic."""

import itertools
import os
import pickle

import numpy as np
import pytest

from jaxvision.data import train_batches
from jaxvision.data import yolo_augment as ya
from jaxvision.data.yolo_transforms import (
    YOLOEvalTransform,
    YOLOTrainTransform,
    close_mosaic_position,
    letterbox,
)
from jaxvision.errors import UserError
from jaxvision.evaluation.coco import CocoEvaluator

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "yolo_augment.npz")
# Rectangle colours of `_source`'s images (class i + 1 is colour i), on black.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
NO_COLOUR = {"hsv": (0.0, 0.0, 0.0)}


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE)


def _fields(boxes, classes=None) -> dict:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return {
        "boxes": boxes,
        "classes": np.arange(1, n + 1, dtype=np.int32) if classes is None else classes,
        "iscrowd": np.zeros(n, np.int32),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
    }


def _rect_example(i: int, height: int, width: int, rect) -> dict:
    """A black image with one filled rectangle (x1, y1, x2, y2) of COLOURS[i], class i + 1."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = rect
    image[y1:y2, x1:x2] = COLOURS[i]
    return {"image": image, **_fields([rect], np.int32([i + 1])), "image_id": i + 1}


def _source():
    """4 images of different shapes, each with a rectangle of its own colour and class."""
    return [
        _rect_example(0, 60, 80, (10, 12, 50, 40)),
        _rect_example(1, 80, 50, (5, 30, 40, 70)),
        _rect_example(2, 64, 64, (20, 8, 44, 56)),
        _rect_example(3, 40, 90, (30, 5, 85, 30)),
    ]


def _colour_bounds(image: np.ndarray, colour: np.ndarray):
    """Pixel-edge bounds (x1, y1, x2, y2) of the pixels close to `colour`, or None."""
    on = np.all(np.abs(image.astype(int) - colour) < 80, axis=-1)
    if not on.any():
        return None
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


# ---------------------------------------------------------------------------------------------
# the reference's arithmetic on fixed inputs


def test_letterbox_layout_and_boxes_equal_the_reference(ref):
    canvas = int(ref["canvas"])
    for (scaleup, h, w, new_h, new_w, top, left), boxes, expected in zip(
        ref["letterbox_layout"], ref["letterbox_in"], ref["letterbox_out"], strict=True
    ):
        image = np.full((h, w, 3), 255, np.uint8)
        out, moved, scale, size, offset = letterbox(image, boxes, canvas, scaleup=bool(scaleup))
        assert tuple(size) == (new_h, new_w) and tuple(offset) == (top, left)
        # The reference's LetterBox scales boxes by its one ratio r, we by each axis's
        # new / old, what the pixels were resized by (as its training and validation loads do):
        # its boxes, unscaled by r and rescaled by ours, are ours.
        ratio = min(canvas / h, canvas / w) if scaleup else min(canvas / h, canvas / w, 1.0)
        pad = np.float32([left, top, left, top])
        axes = np.float32([new_w / w, new_h / h] * 2)
        np.testing.assert_allclose(moved, (expected - pad) / ratio * axes + pad, atol=1e-4)
        np.testing.assert_allclose(scale, (new_h / h, new_w / w), rtol=1e-6)
        assert (out[top : top + new_h, left : left + new_w] == 255).all()
        assert (out == 114).sum() == 3 * (canvas * canvas - new_h * new_w)


def test_mosaic_places_images_and_boxes_as_the_reference(ref):
    canvas = int(ref["canvas"])
    shapes = [tuple(s) for s in ref["mosaic_shapes"]]
    images = [np.full((h, w, 3), i, np.uint8) for i, (h, w) in enumerate(shapes)]
    parts = [_fields(b, np.full(2, i)) for i, b in enumerate(ref["mosaic_in"])]
    for centre, expected, boxes, classes in zip(
        ref["mosaic_centres"],
        ref["mosaic_canvases"],
        ref["mosaic_boxes"],
        ref["mosaic_classes"],
        strict=True,
    ):
        out, fields = ya.mosaic(images, parts, canvas, tuple(centre))
        placed = out[..., 0].copy()
        placed[placed == 114] = 255
        np.testing.assert_array_equal(placed, expected)
        n = int((classes >= 0).sum())
        np.testing.assert_array_equal(fields["classes"], classes[:n])
        np.testing.assert_allclose(fields["boxes"], boxes[:n], atol=1e-4)


def test_mosaic_quadrants_by_hand():
    """Centre (64, 64) on a 128 canvas (S 64): each image's corner touches the centre."""
    images = [np.zeros((h, w, 3), np.uint8) for h, w in [(40, 30), (20, 50), (30, 20), (64, 64)]]
    box = [0, 0, 10, 10]
    parts = [_fields([box], np.int32([i])) for i in range(4)]
    _, fields = ya.mosaic(images, parts, 64, (64, 64))
    np.testing.assert_array_equal(
        fields["boxes"],
        [
            [34, 24, 44, 34],  # top-left image: its bottom-right corner at the centre
            [64, 44, 74, 54],  # top-right: bottom-left corner at the centre
            [44, 64, 54, 74],  # bottom-left: top-right corner at the centre
            [64, 64, 74, 74],  # bottom-right: top-left corner at the centre
        ],
    )
    # Centre (40, 40), 100 x 100 images: boxes cut by the canvas are clipped, those left
    # without area dropped.
    big = [np.zeros((100, 100, 3), np.uint8)] * 4
    boxes = [[0, 0, 10, 10], [90, 90, 100, 100], [55, 50, 70, 70]]
    parts = [_fields(boxes, np.int32([i] * 3)) for i in range(4)]
    _, fields = ya.mosaic(big, parts, 64, (40, 40))
    assert fields["classes"].tolist() == [0, 0, 1, 2, 3, 3]
    np.testing.assert_array_equal(
        fields["boxes"],
        [
            [30, 30, 40, 40],
            [0, 0, 10, 10],  # (-5, -10, 10, 10) clipped
            [95, 0, 110, 10],
            [0, 90, 10, 110],
            [40, 40, 50, 50],
            [95, 90, 110, 110],
        ],
    )


def test_affine_boxes_and_filter_equal_the_reference(ref):
    canvas = int(ref["canvas"])
    for matrix, s, boxes, expected, kept in zip(
        ref["affine_matrices"],
        ref["affine_scales"],
        ref["affine_in"],
        ref["affine_out"],
        ref["affine_kept"],
        strict=True,
    ):
        out = ya.affine_boxes(_fields(boxes), matrix.astype(np.float64), float(s), canvas)
        np.testing.assert_array_equal(np.isin(np.arange(1, 7), out["classes"]), kept)
        np.testing.assert_allclose(out["boxes"], expected[kept], atol=2e-3)


def test_box_candidates_equal_the_reference(ref):
    keep = ya.box_candidates(ref["candidates_before"], ref["candidates_after"])
    np.testing.assert_array_equal(keep, ref["candidates_keep"])


def test_box_candidate_rules():
    before = np.float32([[0, 0, 10, 10]] * 5)
    after = np.float32(
        [
            [0, 0, 10, 10],  # kept
            [0, 0, 2, 10],  # width 2: not more than 2 px
            [0, 0, 3.2, 3.2],  # sides fine, area 0.1024 of before: kept
            [0, 0, 3.1, 3.1],  # area 0.0961 of before: dropped
            [0, 0, 300, 2.9],  # aspect 103 >= 100: dropped (area and sides fine)
        ]
    )
    assert ya.box_candidates(before, after).tolist() == [True, False, True, False, False]


def test_hsv_shift_is_the_reference_up_to_quantisation(ref):
    ours = ya.shift_hsv(ref["hsv_in"], ref["hsv_r"]).astype(int)
    theirs = ref["hsv_out"].astype(int)
    difference = np.abs(ours - theirs)
    # PIL's hue has 256 steps to OpenCV's 180, and each rounds on its own way back to RGB.
    assert np.median(difference) <= 2 and np.percentile(difference, 95) <= 8
    # Greys (zero saturation) stay grey in both.
    greys = ours[0, :4]
    assert (greys == greys[:, :1]).all() and (theirs[0, :4] == theirs[0, :4, :1]).all()


# ---------------------------------------------------------------------------------------------
# pixels and boxes together


def test_letterbox_boxes_map_back_through_the_evaluator():
    """A 50 x 90 image on a 64 canvas: boxes out of YOLOEvalTransform, given to the evaluator
    as detections and ground truth, come back in the image's pixels, and the picture kept is
    the image without its padding."""
    example = _rect_example(0, 50, 90, (10, 12, 50, 40))
    example["boxes"] = np.float32([[10, 12, 50, 40], [0, 0, 90, 50], [33.5, 7.25, 61, 9]])
    example["classes"], example["iscrowd"] = np.int32([1, 1, 1]), np.int32([0, 0, 0])
    example["area"] = np.float32([1120, 4500, 50])
    out = YOLOEvalTransform(64)(example)
    assert out["image"].shape == (64, 64, 3) and out["mask"] is True
    assert tuple(out["size"]) == (36, 64) and tuple(out["offset"]) == (14, 0)  # ceil(50 * 64/90)
    # The rectangle's pixels are where its box says.
    np.testing.assert_allclose(_colour_bounds(out["image"], COLOURS[0]), out["boxes"][0], atol=1)
    outputs = {
        "boxes": out["boxes"][None],
        "scores": np.float32([[0.9, 0.8, 0.7]]),
        "classes": np.int32([[1, 1, 1]]),
        "valid": np.ones((1, 3), bool),
        "gt_boxes": out["boxes"][None],
        "gt_classes": np.int32([[1, 1, 1]]),
        "gt_mask": np.ones((1, 3), bool),
        "gt_iscrowd": np.zeros((1, 3), np.int32),
        "gt_area": out["area"][None],
        "image_id": np.int32([7]),
        "scale": out["scale"][None],
        "offset": out["offset"][None],
        "mask": np.bool_([True]),
    }
    evaluator = CocoEvaluator(["bg", "rect"])
    batch = {k: out[k][None] for k in ("image", "size", "offset")} | {"image_id": np.int32([7])}
    evaluator.add(outputs, batch)
    dataset, detections = evaluator.coco_datasets()
    xywh = example["boxes"].copy()
    xywh[:, 2:] -= xywh[:, :2]
    np.testing.assert_allclose([a["bbox"] for a in dataset["annotations"]], xywh, atol=1e-4)
    np.testing.assert_allclose([d["bbox"] for d in detections], xywh, atol=1e-4)
    assert evaluator.pictures[7].shape == (36, 64, 3)
    assert not (evaluator.pictures[7] == 114).all(-1).any()  # no padding in the picture
    assert evaluator.result("eval")["eval/AP"] == pytest.approx(1.0)


def test_affine_keeps_boxes_on_their_rectangles():
    example = _rect_example(2, 96, 96, (30, 20, 70, 60))
    fields = _fields(example["boxes"], example["classes"])
    checked = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        image, out, _ = ya.random_affine(
            example["image"], fields, rng, 64, degrees=15, translate=0.1, scale=0.5, shear=5
        )
        bounds = _colour_bounds(image, COLOURS[2])
        if len(out["boxes"]):
            checked += 1
            # A rectangle's corners bound it exactly; bilinear edges add a pixel at most.
            np.testing.assert_allclose(out["boxes"][0], bounds, atol=1.5)
    assert checked >= 8


def test_train_transform_keeps_every_box_on_its_object():
    """Mosaic, affine and flips (colour off) over 4 coloured rectangles: every box bounds the
    pixels of its class's colour."""
    source = _source()
    # No rotation: a turned rectangle cut by the canvas has a box larger than what is left.
    transform = YOLOTrainTransform(64, source=source, max_boxes=8, fliplr=0.5, **NO_COLOUR)
    boxes_seen = 0
    for seed in range(16):
        out = transform(source[seed % 4], np.random.default_rng(seed))
        assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
        assert tuple(out["size"]) == (64, 64) and not out["iscrowd"].any()
        for box, c in zip(out["boxes"], out["classes"], strict=True):
            # The colour's pixels around the box (a filtered box may leave a sliver of its
            # rectangle elsewhere, as the reference's filter does).
            x1, y1 = np.maximum(np.floor(box[:2]).astype(int) - 2, 0)
            x2, y2 = np.ceil(box[2:]).astype(int) + 2
            bounds = _colour_bounds(out["image"][y1:y2, x1:x2], COLOURS[c - 1])
            np.testing.assert_allclose(box, bounds + [x1, y1, x1, y1], atol=1.5)
            boxes_seen += 1
    assert boxes_seen >= 24


def test_hsv_keeps_the_range_and_is_the_identity_at_gains_zero():
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), np.uint8)
    assert ya.hsv_jitter(image, np.random.default_rng(0), (0.0, 0.0, 0.0)) is image
    for seed in range(4):
        out = ya.hsv_jitter(image, np.random.default_rng(seed), (0.015, 0.7, 0.4))
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert not np.array_equal(out, image)
    # Value only: the largest channel scales by 1 + r (within PIL's HSV rounding).
    darker = ya.shift_hsv(image, np.array([0.0, 0.0, -0.3])).astype(int)
    expected = np.floor(image.max(-1) * 0.7)
    assert np.abs(darker.max(-1) - expected).max() <= 1


def test_flips_mirror_boxes():
    boxes = np.float32([[10, 5, 30, 25]])
    np.testing.assert_array_equal(ya.flip_boxes(boxes, 64, 0), [[34, 5, 54, 25]])
    np.testing.assert_array_equal(ya.flip_boxes(boxes, 64, 1), [[10, 39, 30, 59]])


# ---------------------------------------------------------------------------------------------
# determinism, the pipeline, close-mosaic


def test_same_seed_and_position_give_the_same_example():
    source = _source()
    transform = YOLOTrainTransform(64, source=source, degrees=5, max_boxes=8)
    a = transform(source[1], np.random.default_rng(3), position=5)
    b = pickle.loads(pickle.dumps(transform))(source[1], np.random.default_rng(3), position=5)
    c = transform(source[1], np.random.default_rng(4), position=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["image"], c["image"])


def test_train_batches_pass_positions_and_resume_exactly():
    source = _source()
    transform = YOLOTrainTransform(64, source=source, max_boxes=8, mosaic_until=12)
    kwargs = dict(global_batch_size=4, seed=1)
    run = list(itertools.islice(train_batches(source, transform, **kwargs), 5))
    resumed = list(train_batches(source, transform, start_step=3, num_steps=2, **kwargs))
    for a, b in zip(run[3:], resumed, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert run[0]["image"].shape == (4, 64, 64, 3) and run[0]["boxes"].shape == (4, 8, 4)
    # From position 12 (step 3) on, no mosaic: every image shows only its own class.
    for step, batch in enumerate(run):
        rows = zip(batch["classes"], batch["boxes_mask"], strict=True)
        mixed = [len(set(c[m].tolist())) > 1 for c, m in rows]
        if step >= 3:
            assert not any(mixed)
        else:
            assert sum(mixed) >= 2


class _Positions:
    """A positional transform that reports its position and its generator's first draw."""

    positional = True

    def __call__(self, example, rng, position):
        return {"position": position, "draw": rng.random()}


def _draw(example, rng):
    return {"draw": rng.random()}


def test_positional_transforms_see_the_stream_index_and_the_same_generators():
    source = [{"image": np.zeros((2, 2, 3), np.uint8)}] * 5
    kwargs = dict(global_batch_size=4, seed=2, num_steps=3)
    batches = list(train_batches(source, _Positions(), **kwargs))
    plain = list(train_batches(source, _draw, **kwargs))
    assert np.concatenate([b["position"] for b in batches]).tolist() == list(range(12))
    for a, b in zip(batches, plain, strict=True):
        np.testing.assert_array_equal(a["draw"], b["draw"])
    resumed = next(train_batches(source, _Positions(), **{**kwargs, "num_steps": 1}, start_step=2))
    assert resumed["position"].tolist() == [8, 9, 10, 11]


def test_close_mosaic_position():
    # 100 steps of 8 over 160 examples (5 epochs): the last 2 epochs start at example 480.
    assert close_mosaic_position(800, 160, 2) == 480
    assert close_mosaic_position(800, 160, 10) == 0
    assert close_mosaic_position(800, 160, 0) is None


def test_bad_settings_are_clear_errors():
    with pytest.raises(UserError, match="mosaic needs the training source"):
        YOLOTrainTransform(64)
    with pytest.raises(UserError, match=r"mosaic, fliplr and flipud are probabilities"):
        YOLOTrainTransform(64, source=_source(), fliplr=1.5)
    assert YOLOTrainTransform(64, mosaic=0.0).source is None  # no mosaic, no source needed


def test_images_without_boxes_and_crowd_boxes():
    empty = {**_rect_example(0, 30, 40, (0, 0, 1, 1)), **_fields(np.zeros((0, 4)))}
    crowd = _rect_example(1, 50, 50, (5, 5, 30, 30)) | {"iscrowd": np.int32([1])}
    source = [empty, crowd]
    out = YOLOTrainTransform(32, source=source)(empty, np.random.default_rng(0))
    assert out["boxes"].shape == (0, 4) and out["classes"].shape == (0,)  # crowd left out
    evaluated = YOLOEvalTransform(32)(crowd)
    assert evaluated["iscrowd"].tolist() == [1]  # evaluation keeps crowd boxes, as COCO scores them
    np.testing.assert_allclose(evaluated["boxes"], [[3.2, 3.2, 19.2, 19.2]], atol=1e-5)
