"""Schedules and optimizers: warmup/cosine values, weight-decay masks, bad names."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.errors import UserError
from jaxvision.train import optim


def test_warmup_cosine_schedule_values():
    schedule = optim.make_schedule("cosine", base_lr=0.4, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(schedule(0), 0.0, atol=1e-7)
    np.testing.assert_allclose(schedule(5), 0.2, rtol=1e-6)
    np.testing.assert_allclose(schedule(10), 0.4, rtol=1e-6)
    # Halfway through the cosine part the rate is half the peak.
    np.testing.assert_allclose(schedule(55), 0.2, rtol=1e-5)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-7)


def test_constant_schedule_after_warmup():
    schedule = optim.make_schedule("constant", base_lr=0.1, total_steps=50, warmup_steps=4)
    np.testing.assert_allclose([schedule(2), schedule(4), schedule(49)], [0.05, 0.1, 0.1])


def test_decay_mask_skips_norms_and_biases():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 4))},
        "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
        "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)},
    }
    mask = optim.decay_mask(params)
    assert mask == {
        "conv": {"kernel": True},
        "bn": {"scale": False, "bias": False},
        "dense": {"kernel": True, "bias": False},
    }


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_kernels_only(name):
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    tx = optim.make_optimizer(name, optax.constant_schedule(0.1), weight_decay=0.5)
    grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # sgd: g = 0.5 * 2 = 1, step = -0.1 * 1 (Nesterov's first step doubles: g + 0.9 g).
    # adamw: decoupled, -lr * wd * p = -0.1.
    expected_kernel = 2.0 - (0.19 if name == "sgd" else 0.1)
    np.testing.assert_allclose(new["kernel"], expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(new["bias"], 2.0)


def test_gradient_clipping_bounds_the_update():
    params = {"w": jnp.zeros(4)}
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), momentum=0.0, grad_clip_norm=1.0)
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(np.linalg.norm(updates["w"]), 1.0, rtol=1e-6)


def test_unknown_names_raise_user_error():
    with pytest.raises(UserError, match="unknown optimizer 'lion': choose one of sgd, adamw"):
        optim.make_optimizer("lion", optax.constant_schedule(0.1))
    with pytest.raises(UserError, match="unknown schedule 'step'"):
        optim.make_schedule("step", base_lr=0.1, total_steps=10)
