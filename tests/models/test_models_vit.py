"""ViT, R50+ViT hybrid and MLP-Mixer: timm parameter counts, shapes, pooling, regularisers."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxvision.errors import UserError
from jaxvision.models import mixer, vit

# timm.create_model(name, num_classes=1000): sum(p.numel() for p in model.parameters()).
TIMM_PARAM_COUNTS = {
    "ViT_Ti16": 5_717_416,  # vit_tiny_patch16_224
    "ViT_S16": 22_050_664,  # vit_small_patch16_224
    "ViT_B16": 86_567_656,  # vit_base_patch16_224
    "ViT_B32": 88_224_232,  # vit_base_patch32_224
    "ViT_L16": 304_326_632,  # vit_large_patch16_224
    "ViT_H14": 632_045_800,  # vit_huge_patch14_224
    "ViT_g14": 1_012_611_432,  # vit_giant_patch14_224
    "ViT_bigG14": 1_844_440_680,  # vit_gigantic_patch14_224
    "ViT_B16_R50": 98_659_112,  # vit_base_r50_s16_224
}
# timm's default configs of these two have no classifier (num_classes=0).
TIMM_HEADLESS_COUNTS = {"ViT_H14": 630_764_800, "ViT_B16_R50": 97_890_112}

# Tiny geometry shared by most tests: 32px images, 8px patches -> 4x4 grid, width 32.
TINY = dict(num_classes=5, patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2, image_size=32)
TINY_MIXER = dict(
    num_classes=5,
    patch_size=8,
    width=32,
    depth=2,
    tokens_mlp_dim=16,
    channels_mlp_dim=64,
    image_size=32,
)


def abstract_variables(model, shape, unbox=True):
    """Variables as ShapeDtypeStructs: traces init without compiling or allocating.

    unbox: strip the logical-partitioning boxes (as the train state does).
    """
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    return nn.meta.unbox(variables) if unbox else variables


@functools.cache
def preset_variables(preset):
    """A preset's variables at 1000 classes on 224 px, traced once for the tests that read them."""
    return abstract_variables(getattr(vit, preset)(num_classes=1000), (1, 224, 224, 3))


def random_variables(model, shape, seed=0, unbox=True):
    """init's structure filled by numpy (a zero-initialised head would hide the logits)."""
    rng = np.random.default_rng(seed)
    fill = lambda s: (rng.normal(size=s.shape) * 0.2).astype(s.dtype)  # noqa: E731
    return jax.tree.map(fill, abstract_variables(model, shape, unbox))


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def images(n=2, size=32, seed=1):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("preset", sorted(TIMM_PARAM_COUNTS))
def test_param_count_equals_timm(preset):
    params = preset_variables(preset)["params"]
    assert count(params) == TIMM_PARAM_COUNTS[preset]
    if preset in TIMM_HEADLESS_COUNTS:
        assert count(params) - count(params["head"]) == TIMM_HEADLESS_COUNTS[preset]


def test_mixer_param_count_equals_timm():
    params = abstract_variables(mixer.MixerB16(num_classes=1000), (1, 224, 224, 3))["params"]
    assert count(params) == 59_880_472  # timm mixer_b16_224


def test_vit_b16_layout():
    params = preset_variables("ViT_B16")["params"]
    assert params["pos_embed"].shape == (1, 197, 768)  # 14x14 patches + class token
    assert params["cls_token"].shape == (1, 1, 768)
    assert params["patch_embed"]["proj"]["kernel"].shape == (16, 16, 3, 768)
    attn = params["blocks_11"]["attn"]
    assert attn["query"]["kernel"].shape == (768, 12, 64)  # [embed, heads, kv]
    assert attn["out"]["kernel"].shape == (12, 64, 768)
    assert params["blocks_0"]["mlp"]["fc1"]["kernel"].shape == (768, 3072)
    assert "blocks_12" not in params


def test_kernels_carry_logical_axes_for_tensor_parallelism():
    boxed = abstract_variables(vit.ViT(**TINY), (1, 32, 32, 3), unbox=False)
    specs = nn.get_partition_spec(boxed)["params"]
    attn, mlp = specs["blocks_0"]["attn"], specs["blocks_0"]["mlp"]
    assert attn["query"]["kernel"] == P("embed", "heads", "kv")
    assert attn["query"]["bias"] == P("heads", "kv")
    assert attn["out"]["kernel"] == P("heads", "kv", "embed")
    assert (mlp["fc1"]["kernel"], mlp["fc1"]["bias"]) == (P("embed", "mlp"), P("mlp"))
    assert mlp["fc2"]["kernel"] == P("mlp", "embed")
    assert specs["head"]["kernel"] == P()  # the classifier stays whole
    model = vit.ViT(**TINY)
    x = images()
    # apply reads boxed variables as they are: the same logits as unboxed ones.
    boxed = jax.tree.map(np.asarray, random_variables(model, x.shape, unbox=False))
    both = jax.jit(lambda b, x: (model.apply(b, x), model.apply(nn.meta.unbox(b), x)))
    np.testing.assert_array_equal(*both(boxed, x))


def test_hybrid_shapes_on_224():
    model = vit.ViT_B16_R50(num_classes=1000)
    variables = preset_variables("ViT_B16_R50")

    def run(variables, x):
        return model.apply(variables, x, capture_intermediates=True)

    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    logits, state = jax.eval_shape(run, variables, x)
    assert (logits.shape, logits.dtype) == ((1, 1000), jnp.float32)
    embed = state["intermediates"]["patch_embed"]
    # Stem + pool /4, stages 2 and 3 /2 each: 14x14 tokens of 1024 channels, then a 1x1 conv.
    assert embed["backbone"]["__call__"][0].shape == (1, 14, 14, 1024)
    assert embed["__call__"][0].shape == (1, 14, 14, 768)
    params = variables["params"]
    assert params["pos_embed"].shape == (1, 197, 768)
    stages = params["patch_embed"]["backbone"]
    assert [len([k for k in stages[f"stages_{i}"]]) for i in range(3)] == [3, 4, 9]
    assert stages["stem"]["conv"]["kernel"].shape == (7, 7, 3, 64)
    assert "bias" not in stages["stages_1"]["blocks_0"]["conv2"]  # StdConv has no bias


@pytest.mark.parametrize("pool,class_token", [("token", True), ("gap", True), ("gap", False)])
def test_tiny_vit_logits_and_features(pool, class_token):
    model = vit.ViT(**TINY, pool=pool, class_token=class_token)
    x = images()
    variables = random_variables(model, x.shape)

    @jax.jit  # one program (eager applies compile op by op)
    def run(variables, x):
        feats = model.apply(variables, x, features=True)
        norm = vit.layer_norm("norm", jnp.float32).apply(
            {"params": variables["params"]["norm"]}, feats["tokens_1"]
        )
        return model.apply(variables, x), feats, norm

    logits, feats, norm = run(variables, x)
    assert (logits.shape, logits.dtype) == ((2, 5), jnp.float32)
    assert np.all(np.isfinite(logits))
    n = 16 + int(class_token)
    assert set(feats) == {"pre_logits", "tokens_0", "tokens_1", "tokens"}
    assert feats["tokens_0"].shape == feats["tokens_1"].shape == feats["tokens"].shape == (2, n, 32)
    # "tokens" is the last block's output through the final norm.
    np.testing.assert_allclose(feats["tokens"], norm, rtol=1e-5, atol=1e-5)
    assert (feats["pre_logits"].shape, feats["pre_logits"].dtype) == ((2, 32), jnp.float32)
    # The pooled vector is the class token, or the mean of the patch tokens (not the class token).
    tokens = np.asarray(feats["tokens"])
    expected = tokens[:, 0] if pool == "token" else tokens[:, n - 16 :].mean(1)
    np.testing.assert_allclose(feats["pre_logits"], expected, atol=1e-6)
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        logits,
        np.asarray(feats["pre_logits"]) @ head["kernel"] + head["bias"],
        rtol=1e-5,
        atol=1e-5,
    )
    assert ("cls_token" in variables["params"]) == class_token


def test_gap_and_token_pool_differ_with_same_params():
    x = images()
    token = vit.ViT(**TINY, pool="token")
    variables = random_variables(token, x.shape)
    gap = vit.ViT(**TINY, pool="gap")
    both = jax.jit(lambda v, x: (token.apply(v, x), gap.apply(v, x)))
    assert not np.allclose(*both(variables, x), atol=1e-3)


@pytest.mark.slow
def test_sincos2d_posemb_is_fixed():
    model = vit.ViT(**TINY, posemb="sincos2d")
    params = abstract_variables(model, (1, 32, 32, 3))["params"]
    assert "pos_embed" not in params
    assert count(params) == count(abstract_variables(vit.ViT(**TINY), (1, 32, 32, 3))) - 17 * 32
    pe = vit.posemb_sincos_2d(4, 4, 32)
    assert (pe.shape, pe.dtype) == ((1, 16, 32), jnp.float32)
    # Position (0, 0): sin(0) = 0 and cos(0) = 1 in each quarter; positions are all distinct.
    np.testing.assert_array_equal(pe[0, 0], np.tile(np.repeat([0.0, 1.0], 8), 2))
    assert len({tuple(np.round(row, 5)) for row in np.asarray(pe[0])}) == 16
    # x varies along a row, y along a column: position (0, 1) differs from (0, 0) only in x.
    np.testing.assert_array_equal(pe[0, 1, 16:], pe[0, 0, 16:])
    assert not np.allclose(pe[0, 1, :16], pe[0, 0, :16])
    logits = jax.jit(model.apply)(random_variables(model, (2, 32, 32, 3)), images())
    assert logits.shape == (2, 5)


def test_stochastic_depth_only_in_training():
    x = images()
    model = vit.ViT(**TINY, drop_path_rate=0.5)
    variables = random_variables(model, x.shape)

    @jax.jit  # one program (eager applies compile op by op)
    def run(variables, x):
        plain = vit.ViT(**TINY).apply(variables, x)
        train = [
            model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(s)})
            for s in (0, 1)
        ]
        # With both rates 0, training is deterministic and needs no rng.
        plain_train = vit.ViT(**TINY).apply(variables, x, train=True)
        return plain, model.apply(variables, x), train, plain_train

    plain, evaluated, train, plain_train = run(variables, x)
    np.testing.assert_array_equal(evaluated, plain)
    assert not np.allclose(train[0], train[1])
    assert not np.allclose(train[0], plain)
    np.testing.assert_allclose(plain_train, plain, atol=1e-6)


def test_drop_path_drops_whole_samples_and_rescales():
    x = jnp.ones((64, 3, 4))
    y = vit.DropPath(0.25).apply({}, x, True, rngs={"dropout": jax.random.key(0)})
    per_sample = np.asarray(y).reshape(64, -1)
    for row in per_sample:  # each sample is dropped or kept as a whole
        assert np.all(row == 0) or np.allclose(row, 1 / 0.75)
    assert 0 < np.sum(per_sample[:, 0] == 0) < 64


def test_drop_path_rate_grows_linearly_over_depth():
    model = vit.ViT(**{**TINY, "depth": 5}, drop_path_rate=0.4)
    x = images(1)
    variables = random_variables(model, x.shape)
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, vit.DropPath):
            rates.append(context.module.rate)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # at trace time: nothing compiled
        jax.eval_shape(model.apply, variables, x)
    # Two residual branches per block, timm's linspace(0, rate, depth).
    np.testing.assert_allclose(rates, np.repeat([0.0, 0.1, 0.2, 0.3, 0.4], 2), atol=1e-7)


def test_bf16_compute_keeps_float32_params_and_logits():
    x = images()
    for model in (
        vit.ViT(**TINY, dtype=jnp.bfloat16),
        mixer.MlpMixer(**TINY_MIXER, dtype=jnp.bfloat16),
    ):
        variables = abstract_variables(model, x.shape)
        assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

        def run(variables, x, model=model):
            return model.apply(variables, x), model.apply(variables, x, features=True)

        # One compiled program: bf16 ops run eagerly would each compile on their own.
        logits, feats = jax.jit(run)(random_variables(model, x.shape), x)
        assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
        assert feats["tokens"].dtype == jnp.bfloat16 and feats["pre_logits"].dtype == jnp.float32


def test_attention_equals_naive_softmax_reference():
    heads, width, n = 2, 16, 5
    x = np.random.default_rng(0).normal(size=(3, n, width)).astype(np.float32)
    attention = vit.Attention(num_heads=heads)
    params = random_variables(attention, x.shape)["params"]
    got = jax.jit(attention.apply)({"params": params}, x)

    # The reference in float64 numpy: [B, N, D] -> [B, H, N, Dh] per projection.
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def project(name):
        p = p64[name]
        return np.einsum("bnd,dhk->bhnk", x, p["kernel"]) + p["bias"][None, :, None, :]

    q, k, v = project("query"), project("key"), project("value")
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(width // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("bhnk,hkd->bnd", weights @ v, p64["out"]["kernel"]) + p64["out"]["bias"]
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)


def test_attention_kernel_choice(monkeypatch):
    choose = vit.attention_implementation
    assert choose("auto", jnp.bfloat16, 64) == "xla"  # this CPU
    with pytest.raises(UserError, match="attention='cudnn' needs a CUDA GPU"):
        choose("cudnn", jnp.bfloat16, 64)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert choose("auto", jnp.bfloat16, 64) == "cudnn"
    assert choose("auto", jnp.float16, 88) == "cudnn"
    assert choose("auto", jnp.float32, 64) == "xla"  # cuDNN's fused kernel is bf16/fp16 only
    assert choose("auto", jnp.bfloat16, 12) == "xla"  # head dim not a multiple of 8
    assert choose("auto", jnp.bfloat16, 256) == "xla"  # head dim over 128
    assert choose("xla", jnp.bfloat16, 64) == "xla"
    assert choose("cudnn", jnp.float32, 64) == "cudnn"  # asked for: jax reports what fails


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ViT_B16", "ViT_g14"])
def test_bf16_presets_ask_for_cudnn_attention_on_gpu(monkeypatch, preset):
    """Every block passes the model's choice down; on a GPU in bf16 that is cuDNN's kernel."""
    asked = []
    real = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kwargs):
        asked.append(implementation)
        return real(*args, implementation="xla", **kwargs)  # this CPU has no cuDNN

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    model = getattr(vit, preset)(num_classes=10, dtype=jnp.bfloat16)
    abstract_variables(model, (1, 224, 224, 3))
    assert asked == ["cudnn"] * model.depth
    asked.clear()
    abstract_variables(getattr(vit, preset)(num_classes=10, attention="xla"), (1, 224, 224, 3))
    assert asked == ["xla"] * model.depth


def test_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="class_token"):
        vit.ViT(**TINY, class_token=False)
    with pytest.raises(UserError, match="pool"):
        vit.ViT(**TINY, pool="max")
    with pytest.raises(UserError, match="posemb"):
        vit.ViT(**TINY, posemb="rope")
    with pytest.raises(UserError, match="attention"):
        vit.ViT(**TINY, attention="flash")
    model = vit.ViT(**TINY)
    with pytest.raises(UserError, match="image_size=48"):
        abstract_variables(model, (1, 48, 48, 3))


def test_tiny_mixer_logits_and_features():
    model = mixer.MlpMixer(**TINY_MIXER)
    x = images()
    variables = random_variables(model, x.shape)
    assert variables["params"]["blocks_1"]["mlp_tokens"]["fc1"]["kernel"].shape == (16, 16)
    dropped = mixer.MlpMixer(**TINY_MIXER, drop_path_rate=0.5, dropout_rate=0.1)

    @jax.jit  # one program (eager applies compile op by op)
    def run(variables, x):
        return (
            model.apply(variables, x),
            model.apply(variables, x, features=True),
            dropped.apply(variables, x),
            dropped.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)}),
        )

    logits, feats, dropped_eval, train = run(variables, x)
    assert (logits.shape, logits.dtype) == ((2, 5), jnp.float32)
    assert feats["tokens"].shape == (2, 16, 32) and feats["pre_logits"].shape == (2, 32)
    np.testing.assert_allclose(feats["pre_logits"], np.asarray(feats["tokens"]).mean(1), atol=1e-6)
    np.testing.assert_array_equal(dropped_eval, logits)
    assert not np.allclose(train, logits)
