"""Named feature maps: `features=True` returns "pre_logits" and exactly the maps
`feature_names()` lists, shallow to deep, with the documented shapes; the last map is the one
the head reads; features mode creates the same parameters and leaves the logits alone."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision.models as models
from jaxvision.models import densenet, mixer, resnet, simple_cnn, vgg, vit

BASIC = {"C2": (16, 16, 64), "C3": (8, 8, 128), "C4": (4, 4, 256), "C5": (2, 2, 512)}
BOTTLENECK = {"C2": (16, 16, 256), "C3": (8, 8, 512), "C4": (4, 4, 1024), "C5": (2, 2, 2048)}
POOLS = {"pool1": (32, 32, 64), "pool2": (16, 16, 128), "pool3": (8, 8, 256)}
POOLS |= {"pool4": (4, 4, 512), "pool5": (2, 2, 512)}
# name -> every map {name: shape without the batch dimension}, shallow to deep, for a 64x64
# input (inception_v3: 75x75, its smallest).
SPATIAL = {
    "simple_cnn": {"conv1": (32, 32, 32), "conv2": (16, 16, 64)},
    **dict.fromkeys(["resnet18", "resnet34"], BASIC),
    **dict.fromkeys(["resnet50", "resnet101", "resnet152"], BOTTLENECK),
    **dict.fromkeys(["vgg16", "vgg19", "vgg16_bn", "vgg19_bn"], POOLS),
    "densenet121": {
        "block1": (16, 16, 256),
        "block2": (8, 8, 512),
        "block3": (4, 4, 1024),
        "block4": (2, 2, 1024),
    },
    "densenet169": {
        "block1": (16, 16, 256),
        "block2": (8, 8, 512),
        "block3": (4, 4, 1280),
        "block4": (2, 2, 1664),
    },
    "googlenet": {
        "inception3b": (8, 8, 480),
        "inception4e": (4, 4, 832),
        "inception5b": (2, 2, 1024),
    },
    "inception_v3": {"Mixed_5d": (7, 7, 288), "Mixed_6e": (3, 3, 768), "Mixed_7c": (1, 1, 2048)},
}

# name -> (input side, build options, [N, D] of every map: each block's tokens, then "tokens"
# after the final norm; ViTs count their class token in N, Mixer has none; RowRNN's N is H).
SEQUENCES = {
    "vit_ti16": (32, {"image_size": 32}, (5, 192)),
    "vit_s16": (32, {"image_size": 32}, (5, 384)),
    "vit_s4": (32, {"image_size": 32}, (65, 384)),
    "vit_b16": (32, {"image_size": 32}, (5, 768)),
    "vit_b32": (32, {"image_size": 32}, (2, 768)),
    "vit_l16": (32, {"image_size": 32}, (5, 1024)),
    "vit_h14": (28, {"image_size": 28}, (5, 1280)),
    "vit_g14": (28, {"image_size": 28}, (5, 1408)),
    "vit_bigg14": (28, {"image_size": 28}, (5, 1664)),
    "vit_b16_r50": (32, {"image_size": 32}, (5, 768)),
    "mixer_b16": (32, {"image_size": 32}, (4, 768)),
    "row_rnn": (28, {"hidden": 16, "num_layers": 3}, (28, 32)),
}


def test_every_model_is_covered():
    assert sorted(SPATIAL | SEQUENCES) == sorted(models.names())


def _abstract_features(name, side, options):
    """The model's feature_names and its `features=True` output at init (batch 2, bfloat16
    compute), as ShapeDtypeStructs, after checking that init in that mode creates the same
    parameters as without, and what the registry promises of every model it builds: its
    num_classes and dtype, float32 logits [2, 7], and a classifier module that maps to the
    classes (what a linear probe trains). Two traces of init per model, nothing compiled: this
    is the suite's one pass over every registered model."""
    model = models.build(name, num_classes=7, dtype=jnp.bfloat16, **options)
    assert model.num_classes == 7 and model.dtype == jnp.bfloat16
    x = jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32)
    init = functools.partial(model.init_with_output, features=True)
    feats, features_variables = jax.eval_shape(init, jax.random.key(0), x)
    logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), x)
    assert features_variables == variables
    assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)
    head = variables["params"][models.classifier(name)]
    assert head["kernel"].shape[-1] == 7 and head["bias"].shape == (7,)
    return model.feature_names(), feats


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPATIAL))
def test_spatial_maps(name):
    expected = SPATIAL[name]
    names, feats = _abstract_features(name, 75 if name == "inception_v3" else 64, {})
    assert names == tuple(expected) == models.feature_names(name)
    assert {k: f.shape[1:] for k, f in feats.items() if k != "pre_logits"} == expected
    # Maps keep the compute dtype; pre_logits are float32 (their width is the last map's
    # channels, except where dense layers follow the maps).
    assert {feats[k].dtype for k in names} == {jnp.dtype(jnp.bfloat16)}
    assert feats["pre_logits"].dtype == jnp.float32
    if name.startswith(("resnet", "densenet", "googlenet", "inception")):
        assert feats["pre_logits"].shape == (2, expected[names[-1]][-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_sequence_maps(name):
    side, options, shape = SEQUENCES[name]
    names, feats = _abstract_features(name, side, options)
    assert names == models.feature_names(name, **options)
    if name == "row_rnn":  # per-row outputs of each layer, float32 as the recurrent state
        assert names == ("rows_0", "rows_1", "rows_2")
        dtype = jnp.float32
    else:
        depth = models.build(name, num_classes=1, **options).depth
        assert names == (*(f"tokens_{i}" for i in range(depth)), "tokens")
        dtype = jnp.bfloat16
    assert set(feats) == {"pre_logits", *names}
    assert {(feats[k].shape, feats[k].dtype) for k in names} == {((2, *shape), jnp.dtype(dtype))}
    assert (feats["pre_logits"].shape, feats["pre_logits"].dtype) == ((2, shape[1]), jnp.float32)


def _simple_cnn_pre_logits(feats, params):
    fc1 = params["fc1"]
    return jax.nn.relu(feats["conv2"].reshape(2, -1) @ fc1["kernel"] + fc1["bias"])


def _mixer_pre_logits(feats, params):
    # The last block's tokens through the final norm, averaged.
    norm = vit.layer_norm("norm", jnp.float32)
    return norm.apply({"params": params["norm"]}, feats["tokens_1"]).mean(1)


# Small models of the families whose other tests do not tie the maps to the head (ViT's and
# RowRNN's do): (model, input side, head, pre_logits recomputed from the maps and the params,
# or None where dense layers lie between them).
FAMILIES = {
    "resnet": (
        resnet.ResNet((1, 1), resnet.BasicBlock, num_classes=4, width=4, stem="small"),
        16,
        "fc",
        lambda feats, params: feats["C3"].mean((1, 2)),
    ),
    "simple_cnn": (simple_cnn.SimpleCNN(num_classes=4), 16, "fc2", _simple_cnn_pre_logits),
    "vgg": (
        vgg.VGG(cfg=(8, "M", 16, "M"), batch_norm=True, hidden=32, num_classes=4),
        32,
        "classifier_6",
        None,
    ),
    "densenet": (
        densenet.DenseNet(num_classes=4, growth_rate=4, block_config=(1, 2), num_init_features=8),
        32,
        "classifier",
        lambda feats, params: feats["block2"].mean((1, 2)),
    ),
    "mixer": (
        mixer.MlpMixer(
            num_classes=4,
            patch_size=4,
            width=32,
            depth=2,
            tokens_mlp_dim=16,
            channels_mlp_dim=64,
            image_size=16,
        ),
        16,
        "head",
        _mixer_pre_logits,
    ),
}


def _random_variables(model, x, seed=0):
    """Variables of init's structure filled by numpy (no init program to compile): every
    parameter random, the head's included (Mixer's starts at zero), so that the logits check
    means something; BatchNorm variances 1 + noise, positive."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    variables = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.1).astype(s.dtype), abstract)
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree.map_with_path(
            lambda path, v: 1 + abs(v) if path[-1].key == "var" else v, variables["batch_stats"]
        )
    return variables


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_features_are_what_the_head_reads(family):
    model, side, head, pooled = FAMILIES[family]
    x = np.random.default_rng(1).normal(size=(2, side, side, 3)).astype(np.float32)
    variables = _random_variables(model, x)
    params = variables["params"]

    @jax.jit
    def run(variables, x):
        feats = model.apply(variables, x, features=True)
        recomputed = None if pooled is None else pooled(feats, variables["params"])
        return model.apply(variables, x), feats["pre_logits"], recomputed

    logits, pre_logits, recomputed = run(variables, x)
    # Normal-mode logits are the head applied to pre_logits, which come from the last map.
    expected = np.asarray(pre_logits) @ params[head]["kernel"] + params[head]["bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    if pooled is not None:
        np.testing.assert_allclose(pre_logits, recomputed, rtol=1e-5, atol=1e-6)
