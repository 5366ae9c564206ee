"""Image-text two-tower models (jaxvision.models.image_text): parameter counts of the named
sizes against open_clip's, embeddings and logits of the tiny sizes, the text towers' masks and
pooling, the MAP head, and the published initial temperature and bias."""

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax.core import meta
from jax.sharding import PartitionSpec as P

from jaxvision.errors import UserError
from jaxvision.models import image_text
from jaxvision.models.transformer import ACTIVATIONS
from jaxvision.models.vit import ViT
from jaxvision.sharding import param_specs


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# --- Parameter counts, from the reference source's layer sizes --------------------------------


def block(width, mlp):
    """One pre-norm transformer block: 2 LayerNorms, q/k/v/out with biases, a 2-layer MLP."""
    return 2 * 2 * width + 4 * (width * width + width) + 2 * width * mlp + mlp + width


def image_tower(patch, size, width, depth, mlp, *, clip, embed):
    """open_clip's VisionTransformer (clip: conv without bias, class token + its position,
    ln_pre, ln_post, a bias-free proj [width, embed]) or timm's SigLIP ViT (conv with bias, no
    class token, final norm, an attention-pooling head: latent, q, kv, proj, norm, mlp; no
    projection)."""
    tokens = (size // patch) ** 2
    n = patch * patch * 3 * width + depth * block(width, mlp) + 2 * width + tokens * width
    if clip:
        return n + width + width + 2 * width + width * embed
    return (
        n + width + width + 4 * (width * width + width) + 2 * width + 2 * width * mlp + mlp + width
    )


def text_tower(vocab, context, width, depth, mlp, embed, *, bias):
    """open_clip's TextTransformer: token and position embeddings, blocks, ln_final, the
    projection [width, embed] (SigLIP's with a bias)."""
    n = vocab * width + context * width + depth * block(width, mlp) + 2 * width
    return n + width * embed + (embed if bias else 0)


# name: (image, text, total) from the layer sizes in open_clip's model configs
# (src/open_clip/model_configs/<config>.json), and the millions open_clip publishes for the same
# configs in docs/model_profile.csv (image_mparams, text_mparams, mparams).
CLIP_B_TEXT = text_tower(49408, 77, 512, 12, 2048, 512, bias=False)
COUNTS = {
    # ViT-B-32.json; profile 87.85 + 63.43 = 151.28 M (the +1: logit_scale)
    "clip_b32": (image_tower(32, 224, 768, 12, 3072, clip=True, embed=512), CLIP_B_TEXT, 1),
    # ViT-B-16.json; profile 86.19 + 63.43 = 149.62 M
    "clip_b16": (image_tower(16, 224, 768, 12, 3072, clip=True, embed=512), CLIP_B_TEXT, 1),
    # ViT-L-14.json; profile 303.97 + 123.65 = 427.62 M
    "clip_l14": (
        image_tower(14, 224, 1024, 24, 4096, clip=True, embed=768),
        text_tower(49408, 77, 768, 12, 3072, 768, bias=False),
        1,
    ),
    # ViT-B-16-SigLIP.json (timm vit_base_patch16_siglip_224); profile 92.88 + 110.27 = 203.16 M
    # (the +2: t and b)
    "siglip_b16_224": (
        image_tower(16, 224, 768, 12, 3072, clip=False, embed=768),
        text_tower(32000, 64, 768, 12, 3072, 768, bias=True),
        2,
    ),
    # ViT-L-16-SigLIP-256.json; profile 315.96 + 336.19 = 652.15 M
    "siglip_l16_256": (
        image_tower(16, 256, 1024, 24, 4096, clip=False, embed=1024),
        text_tower(32000, 64, 1024, 24, 4096, 1024, bias=True),
        2,
    ),
    # ViT-SO400M-14-SigLIP.json (mlp 4304); profile 427.68 + 449.68 = 877.36 M
    "siglip_so400m14_224": (
        image_tower(14, 224, 1152, 27, 4304, clip=False, embed=1152),
        text_tower(32000, 16, 1152, 27, 4304, 1152, bias=True),
        2,
    ),
}
PUBLISHED_MILLIONS = {
    "clip_b32": (87.85, 63.43, 151.28),
    "clip_b16": (86.19, 63.43, 149.62),
    "clip_l14": (303.97, 123.65, 427.62),
    "siglip_b16_224": (92.88, 110.27, 203.16),
    "siglip_l16_256": (315.96, 336.19, 652.15),
    "siglip_so400m14_224": (427.68, 449.68, 877.36),
}


def param_shapes(model, batch=1):
    images = jnp.zeros((batch, model.image_size, model.image_size, 3))
    tokens = jnp.zeros((batch, model.context_length), jnp.int32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, tokens))
    return meta.unbox(variables["params"])


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts_equal_open_clip(name):
    params = param_shapes(image_text.build(name))
    image = count(params["img"]) + count(params.get("img_proj", {}))
    text = count(params["txt"])
    assert (image, text, count(params)) == (
        COUNTS[name][0],
        COUNTS[name][1],
        sum(COUNTS[name]),
    )
    millions = tuple(round(n / 1e6, 2) for n in (image, text, count(params)))
    assert millions == PUBLISHED_MILLIONS[name]


# --- The tiny sizes, run ------------------------------------------------------------------


@functools.cache
def tiny(name):
    model = image_text.build(name)
    images = jax.random.normal(jax.random.key(1), (3, 32, 32, 3))
    tokens = jax.random.randint(jax.random.key(2), (4, 16), 1, 1000)
    variables = jax.jit(model.init)(jax.random.key(0), images, tokens)
    return model, variables, images, tokens


@pytest.mark.parametrize("name", ["siglip_tiny", "clip_tiny"])
def test_tiny_outputs(name):
    model, variables, images, tokens = tiny(name)

    @jax.jit
    def run(variables, images, tokens):
        alone = (
            model.apply(variables, images, method="embed_images"),
            model.apply(variables, tokens, method="embed_texts"),
        )
        return model.apply(variables, images, tokens), alone

    out, (image_alone, text_alone) = run(variables, images, tokens)
    assert out["image"].shape == (3, 64) and out["text"].shape == (4, 64)
    assert out["image"].dtype == out["text"].dtype == out["logits"].dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(out["image"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(out["text"], axis=1), 1.0, rtol=1e-5)
    bias = out.get("b", 0.0)
    expected = np.exp(out["t"]) * out["image"] @ out["text"].T + bias
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=1e-5)
    # Each side alone gives the same embeddings (zero-shot and retrieval embed one side).
    np.testing.assert_allclose(image_alone, out["image"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(text_alone, out["text"], rtol=1e-6, atol=1e-6)


def test_published_initial_temperature_and_bias():
    _, variables, _, _ = tiny("siglip_tiny")
    params = meta.unbox(variables["params"])
    np.testing.assert_allclose(params["t"], [math.log(10.0)], rtol=1e-7)  # big_vision
    np.testing.assert_allclose(params["b"], [-10.0])
    _, variables, _, _ = tiny("clip_tiny")
    params = meta.unbox(variables["params"])
    np.testing.assert_allclose(params["t"], [math.log(1 / 0.07)], rtol=1e-7)  # open_clip
    assert "b" not in params
    assert (image_text.family("siglip_tiny"), image_text.loss("siglip_tiny")) == (
        "siglip",
        "sigmoid",
    )
    assert (image_text.family("clip_b32"), image_text.loss("clip_b32")) == ("clip", "softmax")


def test_clip_text_is_causal_and_pooled_at_end_of_text():
    model, variables, _, _ = tiny("clip_tiny")
    eot = 1023  # the largest id: CLIP's end-of-text
    tokens = np.zeros((1, 16), np.int32)
    tokens[0, :6] = [5, 17, 300, 42, 8, eot]
    embed_texts = jax.jit(functools.partial(model.apply, method="embed_texts"))

    def embed(t):
        return embed_texts(variables, jnp.asarray(t))[0]

    reference = embed(tokens)
    after = tokens.copy()
    after[0, 9] = 77  # after the end of text: unseen by the end-of-text token
    np.testing.assert_array_equal(embed(after), reference)
    before = tokens.copy()
    before[0, 2] = 77  # before it: seen
    assert np.abs(embed(before) - reference).max() > 1e-3


def test_siglip_text_is_bidirectional_and_pooled_at_the_last_token():
    model, variables, _, _ = tiny("siglip_tiny")
    tokens = np.full((1, 16), 1, np.int32)  # big_vision pads with the end token (id 1)
    tokens[0, :4] = [5, 17, 300, 42]
    text_tower = jax.jit(
        functools.partial(model.apply, method=lambda m, t: m.txt(t, features=True))
    )
    reference = text_tower(variables, jnp.asarray(tokens))
    first = tokens.copy()
    first[0, 0] = 77  # every token is seen by the last one, the pooled one
    changed = text_tower(variables, jnp.asarray(first))
    assert np.abs(changed["embedding"] - reference["embedding"]).max() > 1e-3
    np.testing.assert_array_equal(reference["pre_logits"], reference["tokens"][:, -1])
    # Without a causal mask, the first token sees the last (a CLIP tower's would not).
    last = tokens.copy()
    last[0, 15] = 77
    changed = text_tower(variables, jnp.asarray(last))
    assert np.abs(changed["tokens"][0, 0] - reference["tokens"][0, 0]).max() > 1e-4


def test_map_pooling():
    geometry = dict(num_classes=0, patch_size=8, width=32, depth=1, mlp_dim=64, num_heads=4)
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    model = ViT(**geometry, image_size=32, pool="map", class_token=False)
    variables = jax.jit(model.init)(jax.random.key(1), images)
    apply = jax.jit(model.apply)
    pooled = apply(variables, images)
    assert pooled.shape == (2, 32) and pooled.dtype == jnp.float32
    head = meta.unbox(variables["params"])["attn_pool"]
    shapes = jax.tree.map(lambda x: x.shape, head)
    assert shapes["probe"] == (1, 1, 32)
    assert shapes["attn"]["query"]["kernel"] == (32, 4, 8)
    assert shapes["attn"]["out"]["kernel"] == (4, 8, 32)
    assert shapes["mlp"]["fc1"]["kernel"] == (32, 64)
    # The head: probe, q/k/v/out, a LayerNorm, the MLP; the rest is the gap model's layout.
    gap = ViT(**geometry, image_size=32, pool="gap", class_token=False)
    gap_count = count(jax.eval_shape(lambda: gap.init(jax.random.key(1), images))["params"])
    map_head = 32 + 4 * (32 * 32 + 32) + 2 * 32 + 2 * 32 * 64 + 64 + 32
    assert count(variables["params"]) == gap_count + map_head
    # The pooled features depend on every patch.
    shifted = images.at[1, 24:, 24:].add(1.0)
    assert np.abs(apply(variables, shifted)[1] - pooled[1]).max() > 1e-4


def test_bad_options_are_one_line_errors():
    with pytest.raises(UserError, match=r"image-text model 'clip_tiny' has no option 'depth'"):
        image_text.build("clip_tiny", depth=3)
    with pytest.raises(UserError, match=r"unknown image-text model 'clip_b33'.*did you mean"):
        image_text.build("clip_b33")
    with pytest.raises(UserError, match=r"not embed_dim 32: set embed_dim=64 or image_proj=True"):
        image_text.build("siglip_tiny", embed_dim=32)
    model = image_text.build("clip_tiny")
    with pytest.raises(UserError, match=r"text of 20 tokens is longer than .* context_length 16"):
        jax.eval_shape(
            model.init,
            jax.random.key(0),
            jnp.zeros((1, 32, 32, 3)),
            jnp.zeros((1, 20), jnp.int32),
        )


def test_towers_shard_by_the_zoo_rules():
    # FSDP x tensor parallel over a (data 2, fsdp 2, model 2) mesh: both towers' blocks are
    # split Megatron-style by the ViT's logical axes, FSDP takes the largest free dimension.
    model = image_text.build("siglip_tiny")
    boxed = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 16), jnp.int32)
    )
    mesh = types.SimpleNamespace(
        shape={"data": 2, "fsdp": 2, "model": 2}, axis_names=("data", "fsdp", "model")
    )
    specs = param_specs(
        meta.unbox(boxed["params"]),
        mesh,
        "fsdp+tensor",
        logical_specs=nn.get_partition_spec(boxed)["params"],
        fsdp_min_size=1024,
    )
    assert specs["txt"]["blocks_0"]["mlp"]["fc1"]["kernel"] == P("fsdp", "model")
    assert specs["img"]["blocks_1"]["attn"]["query"]["kernel"] == P("fsdp", "model", None)
    assert specs["img"]["attn_pool"]["attn"]["out"]["kernel"] == P("model", None, "fsdp")
    assert specs["txt"]["token_embed"]["embedding"] == P("fsdp", None)  # [1024, 64]
    assert specs["t"] == specs["b"] == P(None)


def test_each_family_has_its_references_activation_and_norm_epsilon():
    x = jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(ACTIVATIONS["quick_gelu"](x), x / (1 + np.exp(-1.702 * x)))
    exact = 0.5 * x * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    np.testing.assert_allclose(ACTIVATIONS["gelu"](x), exact, rtol=1e-6)
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(ACTIVATIONS["gelu_tanh"](x), tanh, rtol=1e-6)
    # Both towers get the model's: big_vision's for SigLIP, open_clip's for CLIP.
    for name, activation, epsilon in (
        ("siglip_tiny", "gelu_tanh", 1e-6),
        ("clip_tiny", "gelu", 1e-5),
    ):
        _, variables, _, _ = tiny(name)
        bound = image_text.build(name).bind(variables)
        assert (bound.img.activation, bound.img.norm_epsilon) == (activation, epsilon)
        assert (bound.txt.activation, bound.txt.norm_epsilon) == (activation, epsilon)
    with pytest.raises(UserError, match=r"unknown image-text activation 'relu': choose one of "):
        image_text.build("clip_tiny", activation="relu")
