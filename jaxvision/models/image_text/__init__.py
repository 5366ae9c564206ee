"""Image-text (two-tower) models by name: `build("siglip_b16_224")`.

Not classifiers (no `num_classes`), so they have their own registry, as detectors and
generators do. An entry is a `TwoTowers` subclass (`SigLIP` or `CLIP`, in
jaxvision.models.image_text.two_towers) whose entry `defaults` set the geometry; `build`
options override any of them (a smaller depth, the tokenizer's vocab_size). Entry info
`family` ("siglip", "clip") and `loss` ("sigmoid", "softmax") are read without importing the
model.

Names, with their geometry (open_clip's model configs, big_vision's SigLIP variants):
- siglip_b16_224, siglip_l16_256, siglip_so400m14_224: SigLIP B/16 at 224 px (text B, 64
  tokens, vocab 32,000, embeddings 768), L/16 at 256 px (text L, embeddings 1024),
  So400m/14 at 224 px (text So400m, 16 tokens, embeddings 1152).
- clip_b32, clip_b16, clip_l14: CLIP ViT-B/32 and B/16 (text 512 wide, 77 tokens, vocab 49,408,
  embeddings 512), ViT-L/14 (text 768 wide, embeddings 768), all at 224 px.
- siglip_tiny, clip_tiny: CPU sizes: 32 px images in 8 px patches, towers 64 wide and 2 deep,
  16 tokens from a vocab of 1,024, embeddings 64.

Calling convention (jaxvision.models.image_text.two_towers.TwoTowers): `model.apply(variables,
images [B, S, S, 3] float normalised, tokens [T, L] int)` returns {"image": [B, E], "text": [T,
E] (unit norm, float32), "logits": [B, T], "t", "b" (SigLIP)}; `method="embed_images"` /
`"embed_texts"` embed one side alone.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.registry import ModelRegistry

# big_vision's ViT variants (decode_variant): width, depth, mlp_dim, heads.
_VARIANTS = {
    "tiny": (64, 2, 128, 2),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
}


def _image(variant: str, patch_size: int, image_size: int) -> dict[str, Any]:
    width, depth, mlp_dim, heads = _VARIANTS[variant]
    return {
        "image_size": image_size,
        "patch_size": patch_size,
        "image_width": width,
        "image_depth": depth,
        "image_mlp_dim": mlp_dim,
        "image_heads": heads,
    }


def _text(width: int, depth: int, mlp_dim: int, heads: int, **more: Any) -> dict[str, Any]:
    return {
        "text_width": width,
        "text_depth": depth,
        "text_mlp_dim": mlp_dim,
        "text_heads": heads,
        **more,
    }


_TINY_TEXT = _text(*_VARIANTS["tiny"], vocab_size=1024, context_length=16)

# name -> (the TwoTowers subclass, the geometry it is built with)
IMAGE_TEXT_MODELS = ModelRegistry("image-text model", reserved=("dtype",))
for _name, _cls, _defaults in (
    ("siglip_tiny", "SigLIP", {**_image("tiny", 8, 32), **_TINY_TEXT, "embed_dim": 64}),
    ("siglip_b16_224", "SigLIP", {**_image("B", 16, 224), **_text(*_VARIANTS["B"])}),
    (
        "siglip_l16_256",
        "SigLIP",
        {**_image("L", 16, 256), **_text(*_VARIANTS["L"]), "embed_dim": 1024},
    ),
    (
        "siglip_so400m14_224",
        "SigLIP",
        {
            **_image("So400m", 14, 224),
            **_text(*_VARIANTS["So400m"], context_length=16),
            "embed_dim": 1152,
        },
    ),
    ("clip_tiny", "CLIP", {**_image("tiny", 8, 32), **_TINY_TEXT, "embed_dim": 64}),
    ("clip_b32", "CLIP", _image("B", 32, 224)),
    ("clip_b16", "CLIP", _image("B", 16, 224)),
    (
        "clip_l14",
        "CLIP",
        {**_image("L", 14, 224), **_text(768, 12, 3072, 12), "embed_dim": 768},
    ),
):
    IMAGE_TEXT_MODELS.declare(
        _name,
        f"jaxvision.models.image_text.two_towers:{_cls}",
        defaults=_defaults,
        family=_cls.lower(),
        loss="sigmoid" if _cls == "SigLIP" else "softmax",
    )


def names() -> list[str]:
    """All image-text model names, sorted."""
    return IMAGE_TEXT_MODELS.names()


def options(name: str) -> list[str]:
    """Keyword options `build(name, ...)` accepts besides `dtype`, sorted."""
    return IMAGE_TEXT_MODELS.options(name)


def family(name: str) -> str:
    """ "siglip" or "clip" (read without importing the model)."""
    return IMAGE_TEXT_MODELS.info(name)["family"]


def loss(name: str) -> str:
    """The contrastive loss that trains `name`: "sigmoid" or "softmax"
    (jaxvision.ops.contrastive's `sigmoid_loss` / `softmax_loss`)."""
    return IMAGE_TEXT_MODELS.info(name)["loss"]


def build(name: str, *, dtype: Any = jnp.float32, **options: Any) -> nn.Module:
    """The image-text model `name` (unbound) with compute `dtype` (parameters float32) and
    `options` overriding its geometry; UserError for an unknown name or option."""
    return IMAGE_TEXT_MODELS.create(name, dtype=dtype, **options)
