"""ResNet: torchvision parameter counts and geometry, dtypes, BatchNorm state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import resnet

# torchvision.models.resnetNN(num_classes=1000): sum(p.numel() for p in model.parameters()).
TORCHVISION_PARAM_COUNTS = {
    "ResNet18": 11_689_512,
    "ResNet34": 21_797_672,
    "ResNet50": 25_557_032,
    "ResNet101": 44_549_160,
    "ResNet152": 60_192_808,
}


def abstract_variables(model, shape):
    """Variables as ShapeDtypeStructs: traces init without compiling or allocating."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))


def random_variables(model, shape, seed=0):
    """Variables with init's structure filled by numpy: skips compiling init's many random ops.

    BN variances are 1 + noise, so they stay positive.
    """
    rng = np.random.default_rng(seed)
    abstract = abstract_variables(model, shape)
    fill = lambda s: (rng.normal(size=s.shape) * 0.1).astype(s.dtype)  # noqa: E731
    variables = jax.tree.map(fill, abstract)
    variables["batch_stats"] = jax.tree.map_with_path(
        lambda path, v: 1 + abs(v) if path[-1].key == "var" else v, variables["batch_stats"]
    )
    return variables


def intermediate(model, variables, x, name):
    """Output of the direct submodule `name` when `model` runs on x (eval mode)."""
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    return state["intermediates"][name]["__call__"][0]


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("preset", sorted(TORCHVISION_PARAM_COUNTS))
def test_param_count_equals_torchvision(preset):
    model = getattr(resnet, preset)(num_classes=1000)
    variables = abstract_variables(model, (1, 224, 224, 3))
    assert count(variables["params"]) == TORCHVISION_PARAM_COUNTS[preset]


def test_resnet50_torchvision_geometry():
    model = resnet.ResNet50(num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = abstract_variables(model, (1, 224, 224, 3))

    def run(variables, x):
        return model.apply(variables, x, capture_intermediates=True)

    logits, state = jax.eval_shape(run, variables, x)
    assert (logits.shape, logits.dtype) == ((1, 1000), jnp.float32)
    inter = state["intermediates"]
    # Stem (7x7/2 conv, 3x3/2 max pool) takes 224 to 112 then 56; stages 2-4 halve it.
    assert inter["conv1"]["__call__"][0].shape == (1, 112, 112, 64)
    assert inter["layer1_0"]["__call__"][0].shape == (1, 56, 56, 256)
    assert inter["layer2_0"]["__call__"][0].shape == (1, 28, 28, 512)
    assert inter["layer3_5"]["__call__"][0].shape == (1, 14, 14, 1024)
    assert inter["layer4_2"]["__call__"][0].shape == (1, 7, 7, 2048)
    params = variables["params"]
    # v1.5: the stride sits on the 3x3 conv; the projection is a bias-free 1x1 conv.
    assert params["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
    assert params["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 256, 512)
    assert "bias" not in params["layer2_0"]["downsample_conv"]
    assert "downsample_conv" not in params["layer2_1"]
    assert params["fc"]["kernel"].shape == (2048, 1000)


def test_stem_conv_pads_like_torch():
    # 'SAME' gives the same output shapes but pads (2, 3) for a 7x7/2 conv on an even input,
    # shifting every window by one pixel relative to torch's (3, 3).
    model = resnet.ResNet18(num_classes=10, width=8)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    variables = random_variables(model, x.shape)
    kernel = variables["params"]["conv1"]["kernel"]

    @jax.jit
    def run(variables, x):
        def conv(padding):
            dims = ("NHWC", "HWIO", "NHWC")
            return jax.lax.conv_general_dilated(x, kernel, (2, 2), padding, dimension_numbers=dims)

        return intermediate(model, variables, x, "conv1"), conv(((3, 3), (3, 3))), conv("SAME")

    conv1_out, torch_padded, same = run(variables, x)
    assert conv1_out.shape == (1, 16, 16, 8)
    np.testing.assert_allclose(conv1_out, torch_padded, atol=1e-5)
    assert not np.allclose(conv1_out, same, atol=1e-3)


# ResNet-18 sized for 8x8..32x32 inputs, with numpy-filled variables (nothing to compile).
SMALL = dict(num_classes=10, width=16, stem="small")


@pytest.fixture(scope="module")
def small_variables():
    return random_variables(resnet.ResNet18(**SMALL), (1, 8, 8, 1))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 32, 32, 3)])
def test_small_stem_logits(shape):
    model = resnet.ResNet18(**SMALL)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    variables = random_variables(model, shape)

    logits, state = jax.jit(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    )(variables, x)
    inter = state["intermediates"]
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    assert np.all(np.isfinite(logits))
    # No max pool: the stem keeps H x W; stage 4 is H/8 x W/8 with 8 * width channels.
    h = shape[1]
    assert inter["conv1"]["__call__"][0].shape == (2, h, h, 16)
    assert inter["layer4_1"]["__call__"][0].shape == (2, h // 8, h // 8, 128)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_stats_and_logits(small_variables):
    model = resnet.ResNet18(**SMALL, dtype=jnp.bfloat16)
    abstract = abstract_variables(model, (2, 8, 8, 1))
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}

    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype(np.float32)

    @jax.jit
    def run(variables, x):
        trained = model.apply(variables, x, train=True, mutable=["batch_stats"])
        conv1 = intermediate(model, variables, x, "conv1")
        reference = resnet.ResNet18(**SMALL).apply(variables, x)
        return trained, conv1, model.apply(variables, x), reference

    (logits, state), conv1, eval16, reference = run(small_variables, x)
    assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
    assert np.all(np.isfinite(logits))
    # BatchNorm statistics stay float32 although the activations are bfloat16.
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} == {jnp.dtype(jnp.float32)}
    assert conv1.dtype == jnp.bfloat16
    # Same weights in float32 give close logits: bf16 is a precision change, not a new model.
    np.testing.assert_allclose(eval16, reference, atol=0.1, rtol=0.1)


def test_train_updates_batch_stats_with_torch_momentum(small_variables):
    model = resnet.ResNet18(**SMALL)
    x = 3.0 + np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype(np.float32)

    @jax.jit
    def run(variables, x):
        _, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
        _, unchanged = model.apply(variables, x, train=False, mutable=["batch_stats"])
        conv1 = intermediate(model, variables, x, "conv1")
        return state["batch_stats"], unchanged["batch_stats"], conv1.mean(axis=(0, 1, 2))

    after, unchanged, conv1_mean = run(small_variables, x)
    before = small_variables["batch_stats"]
    assert jax.tree.structure(after) == jax.tree.structure(before)
    moved = jax.tree.map(lambda old, new: not np.allclose(old, new), before, after)
    assert all(jax.tree.leaves(moved)), moved
    # momentum 0.9 (torch's 0.1): mean m becomes 0.9 m + 0.1 * the batch mean of bn1's input.
    np.testing.assert_allclose(
        after["bn1"]["mean"], 0.9 * before["bn1"]["mean"] + 0.1 * conv1_mean, rtol=1e-4, atol=1e-6
    )
    # Eval reads the running stats and leaves them alone.
    jax.tree.map(np.testing.assert_array_equal, unchanged, before)


def test_init_follows_torchvision():
    # One Bottleneck stage: the init rules of ResNet-50 at a fraction of the compile time.
    model = resnet.ResNet(
        stage_sizes=(1,),
        block_cls=resnet.Bottleneck,
        num_classes=1000,
        width=32,
        zero_init_residual=True,
    )
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    block = params["layer1_0"]
    # Kaiming normal, fan_out: std = sqrt(2 / (3 * 3 * 32)) for the block's 3x3 conv.
    np.testing.assert_allclose(np.std(block["conv2"]["kernel"]), np.sqrt(2 / (9 * 32)), rtol=0.05)
    np.testing.assert_array_equal(block["bn3"]["scale"], 0.0)
    np.testing.assert_array_equal(block["bn2"]["scale"], 1.0)
    np.testing.assert_array_equal(block["downsample_bn"]["scale"], 1.0)
    np.testing.assert_array_equal(block["downsample_bn"]["bias"], 0.0)
    # torch.nn.Linear: kernel and bias uniform in ±1/sqrt(fan_in), fan_in = 4 * 32.
    bound = 1 / np.sqrt(128)
    for leaf in (params["fc"]["kernel"], params["fc"]["bias"]):
        assert bound * 0.9 < np.abs(leaf).max() <= bound


def test_bad_stem_is_user_error():
    with pytest.raises(UserError, match=r"unknown ResNet stem 'cifar': choose one of imagenet"):
        resnet.ResNet18(num_classes=10, stem="cifar")
