"""Focal, smooth L1, L1 and GIoU losses against torchvision / torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops.losses import generalized_box_iou_loss, l1, sigmoid_focal_loss, smooth_l1
from tests.ops.helpers import assert_close


def test_losses_match_torch(cases):
    for case in cases("losses"):
        for key, expected in case["focal"].items():
            alpha, gamma, reduction = key.split("_")
            focal = jax.jit(sigmoid_focal_loss, static_argnums=(2, 3, 4))
            ours = focal(case["logits"], case["targets"], float(alpha), float(gamma), reduction)
            assert_close(ours, expected, 1e-6, 1e-5, label=f"focal {key}")
        for beta, expected in case["smooth_l1"].items():
            smooth = jax.jit(smooth_l1, static_argnums=2)
            ours = smooth(case["predictions"], case["regression_targets"], float(beta))
            assert_close(ours, expected, 1e-6, label=f"smooth_l1 beta={float(beta):.3g}")
        ours = jax.jit(l1)(case["predictions"], case["regression_targets"])
        assert_close(ours, case["l1"], 0, label="l1")
        for reduction, expected in case["giou_loss"].items():
            giou = jax.jit(generalized_box_iou_loss, static_argnums=(2, 3))
            ours = giou(case["boxes1"], case["boxes2"], reduction)
            assert_close(ours, expected, 1e-6, 1e-6, label=f"giou_loss {reduction}")
        ours = giou(case["boxes1"], case["boxes2"], "none", 1e-3)
        assert_close(ours, case["giou_loss_eps"], 1e-6, label="giou_loss eps=1e-3")


def test_focal_loss_gradients_are_finite_when_saturated():
    logits = jnp.array([-100.0, 0.0, 100.0])
    targets = jnp.array([1.0, 0.0, 0.0])
    grad = jax.jit(jax.grad(lambda x: sigmoid_focal_loss(x, targets, reduction="sum")))
    assert np.isfinite(grad(logits)).all()


def test_reductions():
    x, y = jnp.array([0.0, 2.0]), jnp.array([0.5, 0.0])
    np.testing.assert_allclose(smooth_l1(x, y, reduction="sum"), 0.125 + 1.5)
    np.testing.assert_allclose(l1(x, y, reduction="mean"), 1.25)
    assert generalized_box_iou_loss(jnp.zeros((0, 4)), jnp.zeros((0, 4)), "mean") == 0
    with pytest.raises(ValueError, match="reduction"):
        l1(x, y, reduction="max")
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(x, y, alpha=2.0)
