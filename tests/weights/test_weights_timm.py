"""timm ViT/Mixer weights: stored tiny timm fixtures import to equal logits, export round trip,
position-embedding resampling, and big_vision .npz files (no torch needed).

Fixtures come from `fixtures/make_timm_fixtures.py` (timm 1.0.31, eval mode).
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.models import mixer, vit
from jaxvision.weights import timm
from jaxvision.weights.common import flatten, load_safetensors

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

TINY_VIT = dict(num_classes=5, patch_size=8, width=32, depth=2, mlp_dim=128, num_heads=2)
# fixture -> (registry name for the converter, the same tiny model in jaxvision)
CASES = {
    "vit_tiny": ("vit_ti16", lambda **kw: vit.ViT(**{**TINY_VIT, "image_size": 32, **kw})),
    "vit_tiny_gap": (
        "vit_s16",
        lambda **kw: vit.ViT(**TINY_VIT, image_size=32, class_token=False, pool="gap", **kw),
    ),
    "mixer_tiny": (
        "mixer_b16",
        lambda **kw: mixer.MlpMixer(
            **{
                "num_classes": 5,
                "patch_size": 8,
                "width": 32,
                "depth": 2,
                "tokens_mlp_dim": 16,
                "channels_mlp_dim": 128,
                "image_size": 32,
                **kw,
            }
        ),
    ),
    "hybrid_tiny": (
        "vit_b16_r50",
        lambda **kw: vit.ViT(
            **{**TINY_VIT, "depth": 1, "patch_size": 1, "image_size": 32, **kw},
            backbone_stages=(1,),
        ),
    ),
}


def fixture(name):
    tensors = load_safetensors(os.path.join(FIXTURES, f"{name}.safetensors"))
    expected = dict(np.load(os.path.join(FIXTURES, f"{name}_expected.npz")))
    return tensors, expected


def zeros_like_init(model, shape):
    """A fresh model's variable structure, without compiling init."""
    abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape)))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_logits_match_timm(name):
    model_name, make = CASES[name]
    model = make()
    tensors, expected = fixture(name)
    variables, kept = weights.import_weights(
        model_name, tensors, zeros_like_init(model, (1, 32, 32, 3))
    )
    assert kept == []

    def run(variables, x):
        return model.apply(variables, x), model.apply(variables, x, features=True)

    logits, feats = jax.jit(run)(variables, expected["input"])
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(feats["pre_logits"], expected["pre_logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_round_trip_is_exact(name):
    model_name, make = CASES[name]
    tensors, _ = fixture(name)
    variables, _ = weights.import_weights(
        model_name, tensors, zeros_like_init(make(), (1, 32, 32, 3))
    )
    exported = weights.export_weights(model_name, variables)
    assert sorted(exported) == sorted(tensors)
    for key, value in tensors.items():
        assert exported[key].shape == value.shape, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_attention_heads_are_split_from_fused_qkv():
    tensors, _ = fixture("vit_tiny")
    flat = timm.to_flax("vit_ti16", tensors)
    assert flat[("params", "blocks_1", "attn", "query", "kernel")].shape == (32, 32)
    expected = flatten(zeros_like_init(CASES["vit_tiny"][1](), (1, 32, 32, 3)))
    adapted = timm.adapt("vit_ti16", flat, expected)
    key = adapted[("params", "blocks_1", "attn", "key", "kernel")]
    assert key.shape == (32, 2, 16)
    # Head 1 of `key` is rows 48..63 of timm's qkv weight (q: 0..31, k: 32..63), transposed.
    qkv = tensors["blocks.1.attn.qkv.weight"]
    np.testing.assert_array_equal(key[:, 1, :], qkv[48:64].T)
    out = adapted[("params", "blocks_1", "attn", "out", "kernel")]
    np.testing.assert_array_equal(out[1], tensors["blocks.1.attn.proj.weight"][:, 16:].T)


def test_new_head_when_num_classes_differs():
    model = CASES["vit_tiny"][1](num_classes=7)
    fresh = zeros_like_init(model, (1, 32, 32, 3))
    fresh["params"]["head"]["bias"] = np.full((7,), 3.0, np.float32)
    tensors, _ = fixture("vit_tiny")
    variables, kept = weights.import_weights("vit_ti16", tensors, fresh)
    assert kept == ["params/head/bias", "params/head/kernel"]
    np.testing.assert_array_equal(
        variables["params"]["head"]["bias"], fresh["params"]["head"]["bias"]
    )
    np.testing.assert_array_equal(variables["params"]["norm"]["scale"], tensors["norm.weight"])


def test_posemb_resampled_to_a_larger_image():
    tensors, expected = fixture("vit_tiny")
    model = CASES["vit_tiny"][1](image_size=48)  # 6x6 grid instead of the file's 4x4
    variables, _ = weights.import_weights(
        "vit_ti16", tensors, zeros_like_init(model, (1, 48, 48, 3))
    )
    pos = variables["params"]["pos_embed"]
    assert pos.shape == (1, 1 + 36, 32)
    np.testing.assert_array_equal(pos[:, 0], tensors["pos_embed"][:, 0])  # class token kept
    # Equal to timm's resample_abs_pos_embed (bicubic) of the same embedding.
    np.testing.assert_allclose(pos, expected["pos_embed_6x6"], atol=1e-5, rtol=0)
    # One program (eagerly, the resize's and the model's ops would each compile on their own).
    run = jax.jit(lambda v, x: model.apply(v, jax.image.resize(x, (2, 48, 48, 3), "bilinear")))
    assert np.all(np.isfinite(run(variables, expected["input"])))


def test_posemb_resampling_to_the_same_grid_is_exact():
    posemb = np.random.default_rng(0).normal(size=(1, 1 + 49, 8)).astype(np.float32)
    np.testing.assert_array_equal(timm.resample_posemb(posemb, 7, num_prefix=1), posemb)
    up = timm.resample_posemb(posemb, 14, num_prefix=1)
    assert up.shape == (1, 1 + 196, 8)
    # A constant grid stays constant at any size.
    const = np.ones((1, 16, 3), np.float32)
    np.testing.assert_allclose(timm.resample_posemb(const, 6, num_prefix=0), 1.0, atol=1e-6)


# --- big_vision / google-research .npz ------------------------------------------------------


def timm_to_npz(tensors, layout):
    """The inverse of big_vision.to_timm, written out independently: timm tensors -> .npz keys.

    layout: "vit" (google-research vision_transformer), "big_vision" (scanned blocks, positions
    of the patches only) or "mixer".
    """
    t = {k: np.asarray(v) for k, v in tensors.items()}
    conv = lambda w: np.transpose(w, (2, 3, 1, 0))  # noqa: E731
    out = {}
    if layout == "mixer":
        out["stem/kernel"], out["stem/bias"] = conv(t["stem.proj.weight"]), t["stem.proj.bias"]
        depth = len({k.split(".")[1] for k in t if k.startswith("blocks.")})
        for i in range(depth):
            s, d = f"blocks.{i}.", f"MixerBlock_{i}/"
            for r, n in ((0, "norm1"), (1, "norm2")):
                out[f"{d}LayerNorm_{r}/scale"] = t[f"{s}{n}.weight"]
                out[f"{d}LayerNorm_{r}/bias"] = t[f"{s}{n}.bias"]
            for flax_name, timm_name in (
                ("token_mixing", "mlp_tokens"),
                ("channel_mixing", "mlp_channels"),
            ):
                for r in range(2):
                    out[f"{d}{flax_name}/Dense_{r}/kernel"] = t[
                        f"{s}{timm_name}.fc{r + 1}.weight"
                    ].T
                    out[f"{d}{flax_name}/Dense_{r}/bias"] = t[f"{s}{timm_name}.fc{r + 1}.bias"]
        out["pre_head_layer_norm/scale"], out["pre_head_layer_norm/bias"] = (
            t["norm.weight"],
            t["norm.bias"],
        )
        out["head/kernel"], out["head/bias"] = t["head.weight"].T, t["head.bias"]
        return out

    out["embedding/kernel"] = conv(t["patch_embed.proj.weight"])
    out["embedding/bias"] = t["patch_embed.proj.bias"]
    out["cls"] = t["cls_token"]
    if layout == "vit":
        out["Transformer/posembed_input/pos_embedding"] = t["pos_embed"]
    else:
        out["pos_embedding"] = t["pos_embed"][:, 1:]
    out["Transformer/encoder_norm/scale"] = t["norm.weight"]
    out["Transformer/encoder_norm/bias"] = t["norm.bias"]
    out["head/kernel"], out["head/bias"] = t["head.weight"].T, t["head.bias"]
    mha, mlp, ln2 = (
        ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
        if layout == "vit"
        else ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1")
    )
    d = t["norm.weight"].shape[0]
    heads = 2
    depth = len({k.split(".")[1] for k in t if k.startswith("blocks.")})
    blocks = []
    for i in range(depth):
        s = f"blocks.{i}."
        b = {
            "LayerNorm_0/scale": t[f"{s}norm1.weight"],
            "LayerNorm_0/bias": t[f"{s}norm1.bias"],
            f"{ln2}/scale": t[f"{s}norm2.weight"],
            f"{ln2}/bias": t[f"{s}norm2.bias"],
            f"{mha}/out/kernel": t[f"{s}attn.proj.weight"].T.reshape(heads, d // heads, d),
            f"{mha}/out/bias": t[f"{s}attn.proj.bias"],
        }
        weight = np.split(t[f"{s}attn.qkv.weight"], 3)
        bias = np.split(t[f"{s}attn.qkv.bias"], 3)
        for j, n in enumerate(("query", "key", "value")):
            b[f"{mha}/{n}/kernel"] = weight[j].T.reshape(d, heads, d // heads)
            b[f"{mha}/{n}/bias"] = bias[j].reshape(heads, d // heads)
        for r in range(2):
            b[f"{mlp}/Dense_{r}/kernel"] = t[f"{s}mlp.fc{r + 1}.weight"].T
            b[f"{mlp}/Dense_{r}/bias"] = t[f"{s}mlp.fc{r + 1}.bias"]
        blocks.append(b)
    if layout == "vit":
        for i, b in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in b.items()})
    else:  # nn.scan stacks the blocks along a leading axis
        for k in blocks[0]:
            out[f"Transformer/encoderblock/{k}"] = np.stack([b[k] for b in blocks])
        out = {f"params/{k}": v for k, v in out.items()}

    if "patch_embed.backbone.stem.conv.weight" in t:  # R50 hybrid (google-research names)
        bb = "patch_embed.backbone."
        out["conv_root/kernel"] = conv(t[f"{bb}stem.conv.weight"])
        out["gn_root/scale"] = t[f"{bb}stem.norm.weight"].reshape(1, 1, 1, -1)
        out["gn_root/bias"] = t[f"{bb}stem.norm.bias"].reshape(1, 1, 1, -1)
        s, d = f"{bb}stages.0.blocks.0.", "block1/unit1/"
        for r in (1, 2, 3):
            out[f"{d}conv{r}/kernel"] = conv(t[f"{s}conv{r}.weight"])
            out[f"{d}gn{r}/scale"], out[f"{d}gn{r}/bias"] = (
                t[f"{s}norm{r}.weight"],
                t[f"{s}norm{r}.bias"],
            )
        out[f"{d}conv_proj/kernel"] = conv(t[f"{s}downsample.conv.weight"])
        out[f"{d}gn_proj/scale"] = t[f"{s}downsample.norm.weight"]
        out[f"{d}gn_proj/bias"] = t[f"{s}downsample.norm.bias"]
    return out


@pytest.mark.parametrize(
    "name,layout",
    [
        ("vit_tiny", "vit"),
        ("vit_tiny", "big_vision"),
        ("hybrid_tiny", "vit"),
        ("mixer_tiny", "mixer"),
    ],
)
def test_big_vision_npz_imports_like_timm_tensors(tmp_path, name, layout):
    model_name, make = CASES[name]
    tensors, expected = fixture(name)
    if layout == "big_vision":
        # big_vision gives the class token no position; timm's equivalent is a zero row.
        tensors = {**tensors, "pos_embed": tensors["pos_embed"].copy()}
        tensors["pos_embed"][:, 0] = 0
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **timm_to_npz(tensors, layout))

    assert sorted(timm.load_npz(model_name, path)) == sorted(tensors)
    fresh = zeros_like_init(make(), (1, 32, 32, 3))
    from_npz, kept = weights.load_weights(path, model_name, fresh)
    from_tensors, _ = weights.import_weights(model_name, tensors, fresh)
    assert kept == []
    for key, value in flatten(from_tensors).items():
        np.testing.assert_array_equal(flatten(from_npz)[key], value, err_msg="/".join(key))
    if layout != "big_vision":
        logits = jax.jit(make().apply)(from_npz, expected["input"])
        np.testing.assert_allclose(logits, expected["logits"], atol=1e-4, rtol=0)


def test_npz_with_unknown_parameters_is_refused(tmp_path):
    tensors, _ = fixture("vit_tiny")
    arrays = timm_to_npz(tensors, "vit")
    arrays["MAPHead_0/probe"] = np.zeros((1, 1, 32), np.float32)
    path = str(tmp_path / "map.npz")
    np.savez(path, **arrays)
    with pytest.raises(UserError, match="MAPHead_0/probe"):
        timm.load_npz("vit_ti16", path)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read"):
        timm.load_npz("vit_ti16", str(tmp_path / "broken.npz"))
