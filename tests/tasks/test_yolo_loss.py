"""YOLO's task-aligned assignment and loss against the Ultralytics reference (8.4.190), on the
fixed batch of tests/tasks/fixtures/make_yolo_loss_fixtures.py: overlapping boxes, a 3 x 4 box,
two identical boxes, padding rows and an empty image; reg_max 16 (v8DetectionLoss) and reg_max
1 with the end-to-end heads (E2ELoss, YOLO26)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import anchor_points, complete_box_iou, task_aligned_assign
from jaxvision.ops.task_aligned import centres_in_boxes
from jaxvision.tasks.yolo_loss import (
    YOLOLossOptions,
    detection_loss,
    end_to_end_loss,
    end_to_end_weights,
)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "yolo_loss.npz")
IMAGE = (64, 64)
STRIDES = (8, 16, 32)
POINTS, POINT_STRIDES = anchor_points([(64 // s, 64 // s) for s in STRIDES], STRIDES)


@functools.cache
def _fixture():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def _case(prefix):
    """The fixture's arrays under `prefix/`, with that prefix dropped."""
    return {k[len(prefix) + 1 :]: v for k, v in _fixture().items() if k.startswith(prefix + "/")}


def _truth(assign):
    """The reference's padded ground truth as our inputs: labels [B, M], boxes, mask [B, M]."""
    return (
        assign["gt_labels"][..., 0].astype(np.int32),
        assign["gt_bboxes"],
        assign["mask_gt"][..., 0] > 0,
    )


ASSIGNER_CASES = {
    "one_head": ("v8/assign", {"topk": 10}),
    "one_to_many": ("e2e/one_to_many/assign", {"topk": 10}),
    "one_to_one": ("e2e/one_to_one/assign", {"topk": 7, "topk2": 1}),
}


@functools.cache
def _assign(topk, topk2=None):
    return jax.jit(functools.partial(task_aligned_assign, topk=topk, topk2=topk2))


@pytest.mark.parametrize("name", sorted(ASSIGNER_CASES))
def test_assigner_equals_reference(name):
    prefix, settings = ASSIGNER_CASES[name]
    ref = _case(prefix)
    out = _assign(**settings)(ref["pd_scores"], ref["pd_bboxes"], ref["anc_points"], *_truth(ref))
    np.testing.assert_array_equal(out.foreground, ref["fg_mask"])
    np.testing.assert_array_equal(out.gt_index, ref["target_gt_idx"])
    np.testing.assert_array_equal(out.labels, ref["target_labels"])
    np.testing.assert_array_equal(out.boxes, ref["target_bboxes"])
    np.testing.assert_allclose(out.scores, ref["target_scores"], rtol=1e-6, atol=1e-6)
    assert out.scores.shape == ref["pd_scores"].shape and out.gt_index.dtype == jnp.int32


def test_fixture_covers_the_cases_that_matter():
    """The batch exercises what the assigner must get right: a 3 x 4 box whose candidates exist
    only because it is widened to 16 pixels; anchors claimed by two ground truths (resolved by
    CIoU; between identical boxes the first wins); an empty image; one-to-one keeping one anchor
    per ground truth."""
    ref = _case("v8/assign")
    labels, boxes, mask = _truth(ref)
    points = ref["anc_points"]
    widened = centres_in_boxes(points, boxes, mask, min_side=16.0)
    exact = centres_in_boxes(points, boxes, mask, min_side=0.0)
    assert int(widened[0, 2].sum()) == 4 and int(exact[0, 2].sum()) == 0
    assert ref["fg_mask"][0][ref["target_gt_idx"][0] == 2].sum() == 4  # the tiny box
    # Image 1's identical boxes 0 and 1 have the same candidates and rank them nearly alike:
    # of their 3 x 10 picks, anchors picked twice went to one box only.
    assert (widened[1, 0] == widened[1, 1]).all() and ref["fg_mask"][1].sum() < 3 * 10
    assert not ref["fg_mask"][3].any()
    one = _case("e2e/one_to_one/assign")
    valid = one["mask_gt"][..., 0] > 0
    for fg, index, real in zip(one["fg_mask"], one["target_gt_idx"], valid, strict=True):
        assert sorted(index[fg]) == list(np.flatnonzero(real))  # one anchor per ground truth


def test_padding_rows_may_sit_anywhere():
    """A padding row between valid rows changes nothing but the indices: image 1's rows
    (0, 1, 2, pad) reordered to (0, pad, 1, 2) give the same targets, indices mapped."""
    ref = _case("v8/assign")
    labels, boxes, mask = _truth(ref)
    order = np.asarray([0, 3, 1, 2])
    assert not mask[1, 3] and mask[1, :3].all()
    labels, boxes, mask = labels.copy(), boxes.copy(), mask.copy()
    labels[1], boxes[1], mask[1] = labels[1, order], boxes[1, order], mask[1, order]
    out = _assign(topk=10)(
        ref["pd_scores"], ref["pd_bboxes"], ref["anc_points"], labels, boxes, mask
    )
    np.testing.assert_array_equal(out.foreground, ref["fg_mask"])
    np.testing.assert_array_equal(out.boxes, ref["target_bboxes"])
    np.testing.assert_allclose(out.scores, ref["target_scores"], rtol=1e-6, atol=1e-6)
    fg = ref["fg_mask"][1]
    np.testing.assert_array_equal(order[out.gt_index[1][fg]], ref["target_gt_idx"][1][fg])


def _relative(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def test_anchor_points_equal_reference():
    ref = _case("v8/assign")
    np.testing.assert_array_equal(POINTS * POINT_STRIDES[:, None], ref["anc_points"])


@pytest.mark.slow
def test_detection_loss_equals_reference():
    case = _case("v8")
    truth = _truth(_case("v8/assign"))

    def total(box_outputs, cls_logits):
        out = detection_loss(box_outputs, cls_logits, POINTS, POINT_STRIDES, *truth, IMAGE)
        return out.total, out

    (value, out), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(
        case["box_outputs"], case["cls_logits"]
    )
    for ours, theirs in zip((out.box, out.cls, out.dfl), case["items"], strict=True):
        assert _relative(ours, theirs) < 1e-4, (ours, theirs)
    assert _relative(value, case["total"]) < 1e-4
    np.testing.assert_array_equal(out.targets.foreground, case["assign/fg_mask"])
    for ours, theirs in zip(grads, (case["box_grad"], case["cls_grad"]), strict=True):
        assert np.isfinite(ours).all() and np.abs(ours).max() > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


@functools.cache
def _end_to_end_step(epochs):
    truth = _truth(_case("e2e/one_to_many/assign"))
    options = YOLOLossOptions(reg_max=1)

    def total(many, one, epoch):
        out = end_to_end_loss(
            many, one, POINTS, POINT_STRIDES, *truth, IMAGE, epoch, epochs, options
        )
        return out.total, out

    return jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 4])
def test_end_to_end_loss_equals_reference(epoch):
    """One compiled step for both progress points: the epoch is an argument, not a constant."""
    case = _case("e2e")
    epochs = int(case["epochs"])
    heads = [
        (case[f"{name}/box_outputs"], case[f"{name}/cls_logits"])
        for name in ("one_to_many", "one_to_one")
    ]
    (value, out), grads = _end_to_end_step(epochs)(*heads, jnp.float32(epoch))
    for ours, theirs in zip((out.box, out.cls, out.dfl), case["items"], strict=True):
        assert _relative(ours, theirs) < 1e-4, (ours, theirs)
    assert _relative(value, case[f"epoch_{epoch}/total"]) < 1e-4
    np.testing.assert_allclose(
        end_to_end_weights(epoch, epochs), case[f"epoch_{epoch}/weights"], rtol=1e-7
    )
    if epoch == 0:  # the stored gradients are epoch 0's
        for name, head_grads in zip(("one_to_many", "one_to_one"), grads, strict=True):
            for ours, key in zip(head_grads, ("box_grad", "cls_grad"), strict=True):
                theirs = case[f"{name}/{key}"]
                assert np.isfinite(ours).all() and np.abs(ours).max() > 0
                np.testing.assert_allclose(
                    ours, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max()
                )


def test_end_to_end_weights_schedule():
    """One-to-many 0.8 -> 0.1 linearly over epochs - 1 finished epochs, then held; one-to-one is
    the rest."""
    assert end_to_end_weights(0, 10) == pytest.approx((0.8, 0.2))
    assert end_to_end_weights(9, 10) == pytest.approx((0.1, 0.9))
    assert end_to_end_weights(30, 10) == pytest.approx((0.1, 0.9))
    assert end_to_end_weights(3, 1) == pytest.approx((0.1, 0.9))
    traced = jax.jit(lambda e: end_to_end_weights(e, 10))(jnp.float32(2))
    assert np.allclose(traced, (0.8 - 0.7 * 2 / 9, 0.2 + 0.7 * 2 / 9))


def test_assigner_is_fixed_shape_under_jit():
    """One compilation serves any ground truth of the same padded size, and a batch with no
    ground-truth rows at all gives the reference's empty answer (labels = K)."""
    ref = _case("v8/assign")
    labels, boxes, mask = _truth(ref)
    traces = []

    def assign(*args):
        traces.append(1)
        return task_aligned_assign(*args)

    jitted = jax.jit(assign)
    inputs = (ref["pd_scores"], ref["pd_bboxes"], ref["anc_points"])
    first = jitted(*inputs, labels, boxes, mask)
    second = jitted(*inputs, labels[::-1], boxes[::-1], np.zeros_like(mask))
    assert len(traces) == 1
    assert first.scores.shape == second.scores.shape == ref["pd_scores"].shape
    assert not second.foreground.any() and float(second.scores.sum()) == 0
    empty = task_aligned_assign(*inputs, labels[:, :0], boxes[:, :0], mask[:, :0])
    assert (empty.labels == 4).all() and not empty.foreground.any()


def test_complete_box_iou():
    """Identical boxes: 1 (less eps); disjoint boxes of the same shape: -centre^2 / diagonal^2."""
    a = jnp.asarray([[0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(complete_box_iou(a, a), [1.0], atol=1e-6)
    b = jnp.asarray([[4.0, 0.0, 6.0, 2.0]])
    np.testing.assert_allclose(complete_box_iou(a, b), [-16.0 / 40.0], rtol=1e-6)
