"""RetinaNet and SSD loss and post-processing against torchvision's own RetinaNet.compute_loss
/ postprocess_detections and SSD.compute_loss / postprocess_detections on the same head
outputs and anchors (small models; see make_ops_fixtures.retinanet_case / ssd_case)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.tasks import retinanet_loss, ssd_loss
from tests.ops.helpers import assert_close, assert_same_detections


def _outputs(case):
    return {"cls_logits": case["cls_logits"], "bbox_regression": case["bbox_regression"]}


def test_retinanet_loss_matches_torchvision(cases):
    for case in cases("retinanet"):
        total, parts = jax.jit(retinanet_loss.loss)(
            _outputs(case), case["anchors"], case["boxes"], case["classes"], case["mask"]
        )
        assert_close(parts["cls_loss"], case["cls_loss"], 0, 1e-5, label="retinanet cls_loss")
        assert_close(parts["box_loss"], case["box_loss"], 0, 1e-5, label="retinanet box_loss")
        np.testing.assert_allclose(total, case["cls_loss"] + case["box_loss"], rtol=1e-5)
        giou = retinanet_loss.RetinaNetOptions(box_loss="giou")
        _, parts = jax.jit(functools.partial(retinanet_loss.loss, options=giou))(
            _outputs(case), case["anchors"], case["boxes"], case["classes"], case["mask"]
        )
        assert_close(parts["box_loss"], case["box_loss_giou"], 0, 1e-5, label="giou box_loss")
        assert not np.isclose(case["box_loss_giou"], case["box_loss"])


@pytest.mark.slow
def test_retinanet_postprocess_matches_torchvision(cases):
    for case in cases("retinanet"):
        levels = tuple(int(n) for n in case["num_anchors_per_level"])
        for name, expected in case["postprocess"].items():
            options = retinanet_loss.RetinaNetOptions(
                score_thresh=float(expected["score_thresh"]),
                topk_candidates=int(expected["topk_candidates"]),
                detections_per_img=int(expected["detections_per_img"]),
            )
            post = jax.jit(
                functools.partial(retinanet_loss.postprocess, options=options), static_argnums=2
            )
            ours = post(_outputs(case), case["anchors"], levels, case["image_sizes"])
            assert ours["classes"].dtype == jnp.int32
            assert ours["boxes"].shape == (4, options.detections_per_img, 4)
            for image in range(4):
                assert_same_detections(ours, expected, image, label=f"retinanet {name}")


def test_ssd_loss_matches_torchvision(cases):
    for case in cases("ssd"):
        outputs = _outputs(case)
        loss = jax.jit(ssd_loss.loss)
        _, parts = loss(outputs, case["anchors"], case["boxes"], case["classes"], case["mask"])
        # Image 0 makes hard-negative mining take positives too (torchvision's -inf ranks).
        assert_close(parts["cls_loss"], case["cls_loss"], 0, 1e-5, label="ssd cls_loss")
        assert_close(parts["box_loss"], case["box_loss"], 0, 1e-5, label="ssd box_loss")
        rest = {k: v[1:] for k, v in outputs.items()}
        _, parts = loss(
            rest, case["anchors"], case["boxes"][1:], case["classes"][1:], case["mask"][1:]
        )
        assert_close(parts["cls_loss"], case["cls_loss_rest"], 0, 1e-5, label="ssd cls_loss")
        assert_close(parts["box_loss"], case["box_loss_rest"], 0, 1e-5, label="ssd box_loss")


@pytest.mark.slow
def test_ssd_postprocess_matches_torchvision(cases):
    for case in cases("ssd"):
        for name, expected in case["postprocess"].items():
            options = ssd_loss.SSDOptions(
                score_thresh=float(expected["score_thresh"]),
                topk_candidates=int(expected["topk_candidates"]),
                detections_per_img=int(expected["detections_per_img"]),
            )
            post = jax.jit(functools.partial(ssd_loss.postprocess, options=options))
            ours = post(_outputs(case), case["anchors"], case["image_sizes"])
            for image in range(4):
                assert_same_detections(ours, expected, image, label=f"ssd {name}")


def _toy_batch(num_classes, num_anchors=48, seed=0):
    """Anchors on a grid, two images: one with two boxes (and a padding row), one empty."""
    rng = np.random.default_rng(seed)
    xy = np.stack(np.meshgrid(np.arange(8) * 8.0, np.arange(6) * 8.0), -1).reshape(-1, 2)
    anchors = np.concatenate([xy, xy + 12.0], 1).astype(np.float32)[:num_anchors]
    boxes = np.array([[[2, 2, 14, 14], [20, 10, 40, 30], [0, 0, 0, 0]]] * 2, np.float32)
    classes = np.array([[1, 2, 0], [1, 1, 0]], np.int32)
    mask = np.array([[True, True, False], [False, False, False]])
    outputs = {
        "cls_logits": rng.normal(size=(2, num_anchors, num_classes)).astype(np.float32),
        "bbox_regression": rng.normal(size=(2, num_anchors, 4)).astype(np.float32),
    }
    return outputs, anchors, boxes, classes, mask


def test_losses_have_finite_gradients_with_padding_and_empty_images():
    outputs, anchors, boxes, classes, mask = _toy_batch(3)
    junk = boxes.copy()
    junk[:, 2] = [1, 1, 30, 30]
    for module in (retinanet_loss, ssd_loss):
        loss = jax.jit(
            jax.value_and_grad(lambda o, b, fn=module.loss: fn(o, anchors, b, classes, mask)[0])
        )
        value, grads = loss(outputs, boxes)
        for g in jax.tree.leaves(grads):
            assert np.isfinite(g).all(), module.__name__
        # Padding rows are ignored: junk there changes nothing.
        np.testing.assert_allclose(loss(outputs, junk)[0], value, rtol=1e-6)


def test_an_image_without_boxes_is_all_background():
    outputs, anchors, boxes, classes, mask = _toy_batch(3)
    logits = np.asarray(outputs["cls_logits"][1], np.float64)
    # RetinaNet: the focal loss of all-zero targets, summed (divided by max(1, 0) = 1).
    _, parts = jax.jit(retinanet_loss.loss)(
        {k: v[1:] for k, v in outputs.items()}, anchors, boxes[1:], classes[1:], mask[1:]
    )
    p = 1 / (1 + np.exp(-logits))
    expected = np.sum(0.75 * p**2 * -np.log1p(-p))
    np.testing.assert_allclose(parts["cls_loss"], expected, rtol=1e-5)
    assert parts["box_loss"] == 0


def test_ssd_mining_takes_positives_in_index_order_when_negatives_run_out():
    # 10 default boxes, 3 of them matched exactly: 3 x 3 = 9 negatives wanted, 7 exist, so
    # the ranking's -inf sentinels (positives) fill the last two places, in index order here
    # (torchvision's order there is its sort's, which is unspecified for ties).
    anchors = np.array([[10.0 * i, 0.0, 10.0 * i + 8.0, 8.0] for i in range(10)], np.float32)
    boxes = anchors[[2, 5, 7]][None]
    classes = np.array([[1, 2, 1]], np.int32)
    mask = np.ones((1, 3), bool)
    logits = np.random.default_rng(0).normal(size=(1, 10, 3)).astype(np.float32)
    outputs = {"cls_logits": logits, "bbox_regression": np.zeros((1, 10, 4), np.float32)}
    _, parts = jax.jit(ssd_loss.loss)(outputs, anchors, boxes, classes, mask)
    targets = np.zeros(10, np.int32)
    targets[[2, 5, 7]] = [1, 2, 1]
    shifted = logits[0].astype(np.float64) - logits[0].max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ce = -log_probs[np.arange(10), targets]
    expected = (ce.sum() + ce[2] + ce[5]) / 3
    np.testing.assert_allclose(parts["cls_loss"], expected, rtol=1e-6)
    assert parts["box_loss"] == 0


def test_retinanet_atss_loss_is_the_focal_loss_of_its_matches():
    from jaxvision.ops import box_iou, match_atss, sigmoid_focal_loss

    outputs, anchors, boxes, classes, mask = _toy_batch(3)
    levels = (32, 16)
    atss = retinanet_loss.RetinaNetOptions(matcher="atss", atss_topk=6)
    fn = jax.jit(functools.partial(retinanet_loss.loss, options=atss, anchors_per_level=levels))
    _, parts = fn(outputs, anchors, boxes, classes, mask)
    # The reference's jax pieces jitted (eagerly, each of their ops would compile on its own).
    match = jax.jit(lambda b, m: match_atss(box_iou(b, anchors), b, anchors, m, levels, 6))
    focal_sum = jax.jit(lambda logits, targets: jnp.sum(sigmoid_focal_loss(logits, targets)))
    per_image = []
    for i in range(2):
        matched = np.asarray(match(boxes[i], mask[i]))
        assert set(np.unique(matched)) <= ({-1, 0, 1} if i == 0 else {-1})
        fg = matched >= 0
        assert fg.any() == (i == 0)  # image 1 has no boxes
        targets = np.eye(3, dtype=np.float32)[classes[i][np.maximum(matched, 0)]] * fg[:, None]
        focal = focal_sum(outputs["cls_logits"][i], targets)
        per_image.append(float(focal) / max(1, fg.sum()))  # nothing is ignored
    np.testing.assert_allclose(parts["cls_loss"], np.mean(per_image), rtol=1e-5)
    assert parts["box_loss"] > 0
    with pytest.raises(ValueError, match="needs anchors_per_level"):
        retinanet_loss.loss(outputs, anchors, boxes, classes, mask, atss)
    with pytest.raises(UserError, match="matcher='hungarian'"):
        retinanet_loss.RetinaNetOptions(matcher="hungarian")


@pytest.mark.slow
def test_retinanet_class_softmax_adds_the_cross_entropy_of_the_foreground_anchors():
    from jaxvision.ops import box_iou, match_anchors

    outputs, anchors, boxes, classes, mask = _toy_batch(4)
    plain = jax.jit(retinanet_loss.loss)(outputs, anchors, boxes, classes, mask)[1]
    weighted = retinanet_loss.RetinaNetOptions(class_softmax=0.5)
    with_ce = jax.jit(functools.partial(retinanet_loss.loss, options=weighted))
    parts = with_ce(outputs, anchors, boxes, classes, mask)[1]
    match = jax.jit(lambda b, m: match_anchors(box_iou(b, anchors), m, 0.5, 0.4, True))
    per_image = []
    for i in range(2):
        matched = np.asarray(match(boxes[i], mask[i]))
        fg = np.flatnonzero(matched >= 0)
        logits = np.asarray(outputs["cls_logits"][i], np.float64)[:, 1:]  # background excluded
        log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        ce = -log_p[fg, classes[i][matched[fg]] - 1].sum()
        per_image.append(ce / max(1, len(fg)))
    assert per_image[0] > 0 and per_image[1] == 0  # image 1 has no boxes
    np.testing.assert_allclose(
        parts["cls_loss"] - plain["cls_loss"], 0.5 * np.mean(per_image), rtol=1e-5
    )
    np.testing.assert_allclose(parts["box_loss"], plain["box_loss"], rtol=1e-6)
    grads = jax.grad(lambda o: with_ce(o, anchors, boxes, classes, mask)[0])(outputs)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
