"""The YOLO reference's warmup and EMA ramp: equal to torch's SGD driven as its trainer drives it
(tests/train/fixtures/make_yolo_warmup.py) and to the ramp's formula."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.errors import UserError
from jaxvision.train import ema, optim

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "yolo_warmup.npz")


def test_sgd_warmup_equals_the_references_param_groups():
    ref = np.load(FIXTURE)
    steps = ref["grads_bias"].shape[0]
    schedule = optim.make_schedule(
        "linear", base_lr=0.01, total_steps=40, warmup_steps=10, end_factor=0.01
    )
    tx = optim.make_optimizer(
        "sgd",
        schedule,
        weight_decay=5e-4,
        momentum=0.937,
        nesterov=True,
        warmup_steps=10,
        warmup_bias_lr=0.1,
        warmup_momentum=0.8,
    )
    # "conv/kernel" decays; "bn/scale" and "bn/bias" do not (decay_mask), "bn/bias" is a bias.
    params = {
        "conv": {"kernel": jnp.asarray(ref["start_kernel"])},
        "bn": {"scale": jnp.asarray(ref["start_scale"]), "bias": jnp.asarray(ref["start_bias"])},
    }
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for i in range(steps):
        grads = {
            "conv": {"kernel": ref["grads_kernel"][i]},
            "bn": {"scale": ref["grads_scale"][i], "bias": ref["grads_bias"][i]},
        }
        params, state = step(params, state, grads)
    np.testing.assert_allclose(params["conv"]["kernel"], ref["end_kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["bn"]["scale"], ref["end_scale"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["bn"]["bias"], ref["end_bias"], rtol=1e-5, atol=1e-6)
    # The schedule ends at lrf x lr.
    assert float(schedule(40)) == pytest.approx(1e-4)


def test_warmup_options_name_the_optimizers_that_take_them():
    schedule = optim.make_schedule("constant", base_lr=0.1, total_steps=10)
    with pytest.raises(UserError, match="warmup_bias_lr / warmup_momentum are for optimizer"):
        optim.make_optimizer("lamb", schedule, warmup_steps=2, warmup_bias_lr=0.1)
    with pytest.raises(UserError, match="not 'adamw'"):
        optim.make_optimizer("adamw", schedule, warmup_steps=2, warmup_momentum=0.8)


def test_ema_ramp_is_the_references_exponential():
    decays = [float(ema.ema_decay(s, 0.9999, True, ramp=2000.0)) for s in (0, 1999, 5999)]
    expected = [0.9999 * (1 - np.exp(-u / 2000)) for u in (1, 2000, 6000)]
    np.testing.assert_allclose(decays, expected, rtol=1e-5)
    # Without a ramp, timm's warmup as before.
    assert float(ema.ema_decay(8, 0.9999, True)) == pytest.approx(0.5)
