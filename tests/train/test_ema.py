"""EMA of the weights: exact values over two steps, the warmup formula, jit, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.train import ema


def test_two_steps_without_warmup():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.0)}
    average = ema.ema_init(params)
    average = ema.ema_update(average, {"w": jnp.array([3.0, 4.0]), "b": jnp.array(1.0)}, 0, 0.9)
    # 0.9 * [1, 2] + 0.1 * [3, 4]
    np.testing.assert_allclose(average["w"], [1.2, 2.2], rtol=1e-6)
    np.testing.assert_allclose(average["b"], 0.1, rtol=1e-6)
    average = ema.ema_update(average, {"w": jnp.array([5.0, 6.0]), "b": jnp.array(1.0)}, 1, 0.9)
    # 0.9 * [1.2, 2.2] + 0.1 * [5, 6]
    np.testing.assert_allclose(average["w"], [1.58, 2.58], rtol=1e-6)
    np.testing.assert_allclose(average["b"], 0.19, rtol=1e-6)


def test_two_steps_with_warmup():
    average = {"w": jnp.array(0.0)}
    average = ema.ema_update(average, {"w": jnp.array(10.0)}, 0, 0.999, warmup=True)
    np.testing.assert_allclose(average["w"], 9.0, rtol=1e-6)  # d = 1/10
    average = ema.ema_update(average, {"w": jnp.array(20.0)}, 1, 0.999, warmup=True)
    np.testing.assert_allclose(average["w"], 2 / 11 * 9.0 + 9 / 11 * 20.0, rtol=1e-6)  # d = 2/11


def test_warmup_decay_formula_and_its_cap():
    steps = np.array([0, 1, 8, 80, 890, 10_000])
    decays = np.asarray(jax.vmap(lambda s: ema.ema_decay(s, 0.99, True))(jnp.asarray(steps)))
    np.testing.assert_allclose(decays, np.minimum(0.99, (1 + steps) / (10 + steps)), rtol=1e-6)
    np.testing.assert_allclose(decays[[2, 3]], [0.5, 0.9], rtol=1e-6)
    assert float(decays[-1]) == np.float32(0.99)
    np.testing.assert_allclose(ema.ema_decay(3, 0.99, False), 0.99, rtol=1e-7)


def test_jit_with_a_traced_step_keeps_dtypes_and_copies():
    params = {"w": jnp.ones(3, jnp.bfloat16), "x": jnp.zeros(2, jnp.float32)}
    average = ema.ema_init(params)
    assert average["w"] is not params["w"]
    update = jax.jit(ema.ema_update, static_argnums=(3, 4))
    new = update(
        average, {"w": jnp.zeros(3, jnp.bfloat16), "x": jnp.ones(2)}, jnp.int32(5), 0.5, True
    )
    assert new["w"].dtype == jnp.bfloat16 and new["x"].dtype == jnp.float32
    # d = min(0.5, 6 / 15) = 0.4.
    np.testing.assert_allclose(new["x"], 0.6, rtol=1e-6)
    np.testing.assert_allclose(new["w"].astype(jnp.float32), 0.4, rtol=1e-2)
