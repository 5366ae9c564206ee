"""SimpleCNN: shapes on small inputs and an exact parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.simple_cnn import SimpleCNN


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 28, 28, 1)])
def test_logits_shape_and_dtype(shape):
    model = SimpleCNN(num_classes=10)
    x = jax.random.normal(jax.random.key(1), shape)
    variables = model.init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    logits = model.apply(variables, x, train=True)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_param_count_28x28():
    variables = jax.eval_shape(
        SimpleCNN(num_classes=10).init, jax.random.key(0), jnp.zeros((1, 28, 28, 1))
    )
    conv1 = 3 * 3 * 1 * 32 + 32
    conv2 = 3 * 3 * 32 * 64 + 64
    flat = (28 // 2 // 2) ** 2 * 64  # two 2x2 pools: 28 → 14 → 7
    fc1 = flat * 256 + 256
    fc2 = 256 * 10 + 10
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert n == conv1 + conv2 + fc1 + fc2 == 824_458


def test_dropout_uses_dropout_rng_only_in_training():
    model = SimpleCNN(num_classes=10, dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))


def test_bfloat16_compute_float32_params_and_logits():
    model = SimpleCNN(num_classes=10, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert model.apply(variables, x).dtype == jnp.float32
