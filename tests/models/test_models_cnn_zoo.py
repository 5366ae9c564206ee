"""VGG, GoogLeNet, Inception v3, DenseNet: torchvision parameter counts, output and pre-logits
shapes, aux heads, bfloat16; torch-style pooling; ResNet-50's stage outputs at 224."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models import densenet, googlenet, inception, pooling, resnet, vgg

# torchvision.models.<name>(num_classes=1000, aux_logits=...): sum(p.numel() for p in params).
TORCHVISION_PARAM_COUNTS = {
    "vgg16": (vgg.VGG16, {}, 224, 138_357_544),
    "vgg19": (vgg.VGG19, {}, 224, 143_667_240),
    "vgg16_bn": (vgg.VGG16BN, {}, 224, 138_365_992),
    "vgg19_bn": (vgg.VGG19BN, {}, 224, 143_678_248),
    "densenet121": (densenet.DenseNet121, {}, 224, 7_978_856),
    "densenet169": (densenet.DenseNet169, {}, 224, 14_149_480),
    "googlenet": (googlenet.GoogLeNet, {}, 224, 6_624_904),
    "googlenet_aux": (googlenet.GoogLeNet, {"aux_logits": True}, 224, 13_004_888),
    "inception_v3": (inception.InceptionV3, {}, 299, 23_834_568),
    "inception_v3_aux": (inception.InceptionV3, {"aux_logits": True}, 299, 27_161_264),
}
# pre_logits width for each model at its ImageNet size.
PRE_LOGITS = {
    "vgg16": 4096,
    "densenet121": 1024,
    "densenet169": 1664,
    "googlenet": 1024,
    "inception_v3": 2048,
}


def abstract_variables(model, shape):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAM_COUNTS))
def test_param_count_equals_torchvision(name):
    cls, options, side, expected = TORCHVISION_PARAM_COUNTS[name]
    variables = abstract_variables(cls(num_classes=1000, **options), (1, side, side, 3))
    assert count(variables["params"]) == expected
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRE_LOGITS))
def test_logits_and_features_shapes(name):
    cls, _, side, _ = TORCHVISION_PARAM_COUNTS[name]
    model = cls(num_classes=10, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
    # Two traces, nothing compiled: init's output is the logits; features from an apply.
    logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, features=True), variables, x)
    # The named maps beside pre_logits: test_models_features.
    assert (feats["pre_logits"].shape, feats["pre_logits"].dtype) == (
        (2, PRE_LOGITS[name]),
        jnp.float32,
    )


def test_resnet_features_are_stage_outputs():
    model = resnet.ResNet50(num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = abstract_variables(model, x.shape)
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, features=True), variables, x)
    assert {k: f.shape for k, f in feats.items()} == {
        "C2": (1, 56, 56, 256),
        "C3": (1, 28, 28, 512),
        "C4": (1, 14, 14, 1024),
        "C5": (1, 7, 7, 2048),
        "pre_logits": (1, 2048),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, side, aux_names",
    [(googlenet.GoogLeNet, 224, ("aux1", "aux2")), (inception.InceptionV3, 299, ("AuxLogits",))],
)
def test_aux_heads_run_in_training_only(cls, side, aux_names):
    model = cls(num_classes=10, aux_logits=True)
    x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
    logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert all(name in variables["params"] for name in aux_names)
    rngs = {"dropout": jax.random.key(0)}

    def train(v, x):
        return model.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]

    outputs = jax.eval_shape(train, variables, x)
    # (logits, aux2, aux1) for GoogLeNet, (logits, aux) for Inception v3: torch's order.
    assert isinstance(outputs, tuple) and len(outputs) == 1 + len(aux_names)
    assert all((o.shape, o.dtype) == ((2, 10), jnp.float32) for o in outputs)
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)  # eval mode: logits alone
    # Without aux heads there are no aux params and training returns the logits alone.
    plain = cls(num_classes=10)
    assert not any(name in abstract_variables(plain, x.shape)["params"] for name in aux_names)


def test_googlenet_pools_with_ceil_mode():
    # Sides torchvision's GoogLeNet gives (measured): ceil_mode keeps partial windows, so a
    # 29 input goes 15 → 7 → 3 → 1 → 1 where flooring would reach 0 and fail.
    model = googlenet.GoogLeNet(num_classes=10)
    for side, expected in [(224, (56, 28, 14, 7)), (29, (7, 3, 1, 1))]:
        x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
        init = functools.partial(model.init_with_output, capture_intermediates=True)
        inter = jax.eval_shape(init, jax.random.key(0), x)[1]["intermediates"]
        sides = tuple(
            inter[name]["__call__"][0].shape[1]
            for name in ("conv2", "inception3a", "inception4a", "inception5a")
        )
        assert sides == expected


def test_max_pool_ceil_mode_matches_torch_rule():
    x = jnp.arange(2 * 7 * 7, dtype=jnp.float32).reshape(1, 7, 7, 2)
    # 7 → ceil((7 - 3) / 2) + 1 = 3 windows starting at 0, 2, 4; the last one is 4..6.
    y = pooling.max_pool(x, 3, 2, ceil_mode=True)
    assert y.shape == (1, 3, 3, 2)
    assert pooling.max_pool(jnp.zeros((1, 8, 8, 1)), 3, 2, ceil_mode=True).shape == (1, 4, 4, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, 2::2, 2::2, 0])
    # A window that would start in the right padding is dropped (torch's rule): 6 → 3, not 4.
    assert pooling.pool_output_size(6, 2, 2, padding=1, ceil_mode=True) == 4
    assert pooling.pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3
    assert pooling.pool_output_size(5, 3, 2, padding=0, ceil_mode=True) == 2


def test_adaptive_avg_pool_uses_torch_windows():
    x = jnp.arange(8.0).reshape(1, 8, 1, 1)
    # torch: windows [floor(i*8/7), ceil((i+1)*8/7)) = [0,2), [1,3), ..., [6,8)
    y = pooling.adaptive_avg_pool(jnp.broadcast_to(x, (1, 8, 8, 1)), (7, 7))
    np.testing.assert_allclose(y[0, :, 0, 0], np.arange(7) + 0.5)
    # Expected values from torch.nn.functional.adaptive_avg_pool2d: 3 → 7 repeats rows
    # (windows [0,1), [0,1), [0,2), [1,2), [1,3), ...); 14 → 4 overlaps (size 4 each).
    z = pooling.adaptive_avg_pool(jnp.arange(3.0).reshape(1, 3, 1, 1), (7, 1))
    np.testing.assert_allclose(z[0, :, 0, 0], [0, 0, 0.5, 1, 1.5, 2, 2])
    w = pooling.adaptive_avg_pool(jnp.arange(14.0).reshape(1, 14, 1, 1), (4, 1))
    np.testing.assert_allclose(w[0, :, 0, 0], [1.5, 4.5, 8.5, 11.5])


def _random_variables(model, x, seed=0):
    """Variables of init's structure filled by numpy (no init program to compile); BatchNorm
    variances 1 + noise, positive."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.1).astype(s.dtype), abstract)
    variables["batch_stats"] = jax.tree.map_with_path(
        lambda path, v: 1 + abs(v) if path[-1].key == "var" else v, variables["batch_stats"]
    )
    return variables


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_stats_and_logits():
    model = vgg.VGG(cfg=(8, "M", 16, "M"), batch_norm=True, hidden=32, num_classes=5)
    model16 = vgg.VGG(
        cfg=(8, "M", 16, "M"), batch_norm=True, hidden=32, num_classes=5, dtype=jnp.bfloat16
    )
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    abstract = abstract_variables(model16, x.shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    variables = _random_variables(model16, x)

    @jax.jit
    def run(variables, x):
        """(bf16 training logits and state under two dropout keys, bf16 and f32 eval logits)."""

        def train(seed):
            rngs = {"dropout": jax.random.key(seed)}
            return model16.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])

        return train(2), train(3)[0], model16.apply(variables, x), model.apply(variables, x)

    (logits, state), other, eval16, eval32 = run(variables, x)
    assert (logits.shape, logits.dtype) == ((2, 5), jnp.float32)
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}
    # Same weights in float32: a precision change, not another model.
    np.testing.assert_allclose(eval16, eval32, atol=0.05, rtol=0.05)
    # Dropout (0.5 by default) changes training outputs with the rng, not eval ones.
    assert not np.allclose(logits, other)


@pytest.mark.slow
def test_densenet_drop_rate_is_used_in_training():
    model = densenet.DenseNet(
        num_classes=3, growth_rate=4, block_config=(1, 1), num_init_features=8, drop_rate=0.5
    )
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    variables = _random_variables(model, x)

    @jax.jit
    def run(variables, x):
        def train(seed):
            rngs = {"dropout": jax.random.key(seed)}
            return model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]

        def evaluate(seed):
            return model.apply(variables, x, rngs={"dropout": jax.random.key(seed)})

        return train(1), train(2), evaluate(1), evaluate(2)

    one, two, eval_a, eval_b = run(variables, x)
    assert not np.allclose(one, two)
    np.testing.assert_array_equal(eval_a, eval_b)
