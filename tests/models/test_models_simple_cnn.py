"""SimpleCNN: shapes on small inputs and an exact parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.simple_cnn import SimpleCNN


def _init_and_apply(model, x, **kwargs):
    variables = model.init(jax.random.key(0), x)
    return variables, model.apply(variables, x, **kwargs)


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 28, 28, 1)])
def test_logits_shape_and_dtype(shape):
    model = SimpleCNN(num_classes=10)
    # Shapes are a property of the trace: nothing to compile (the tests below run the model).
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables, logits = jax.eval_shape(lambda x: _init_and_apply(model, x, train=True), x)
    assert set(variables) == {"params"}
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
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype(np.float32)

    @jax.jit
    def run(x):
        variables = model.init(jax.random.key(0), x)

        def apply(seed, train):
            return model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(seed)})

        return apply(2, True), apply(3, True), apply(2, False), apply(3, False)

    a, b, eval_a, eval_b = run(x)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(eval_a, eval_b)


def test_bfloat16_compute_float32_params_and_logits():
    model = SimpleCNN(num_classes=10, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    # Dtypes are a property of the trace: nothing to compile.
    variables, logits = jax.eval_shape(lambda x: _init_and_apply(model, x), x)
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert logits.dtype == jnp.float32
