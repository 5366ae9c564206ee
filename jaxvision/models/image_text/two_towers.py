"""Two-tower image-text models (SigLIP, CLIP): an image tower (the zoo's ViT), a text tower
(`TextTransformer`), both projected to one embedding space and L2-normalised, and a learned
temperature (and, for SigLIP, a bias) that turns cosine similarities into logits.

Parameters, named as big_vision's two-tower checkpoints (`img`, `txt`, `t`, `b`):
  img        the ViT (no head: `num_classes=0`), pooled by "token", "gap" or "map"
  img_proj   CLIP's bias-free projection to embed_dim (SigLIP has none: the pooled image width
             is the embedding, as big_vision's `out_dim=(None, D)` and open_clip's
             `timm_proj="none"`)
  txt        the text tower, projection included
  t          [1] float32: the log of the logit scale; logits = exp(t) * <image, text> (+ b)
  b          [1] float32, SigLIP only
Initial values as published: SigLIP t = log(10), b = -10 (big_vision's `temperature_init=10`,
`bias_init=-10`); CLIP t = log(1 / 0.07) (open_clip's `logit_scale`).

    model = build("siglip_tiny")
    variables = model.init(key, images, tokens)     # images: [B, S, S, 3] float, tokens: [T, L]
    out = model.apply(variables, images, tokens)    # {"image", "text", "logits", "t"(, "b")}
    model.apply(variables, images, method="embed_images")    # [B, E] float32, unit norm
    model.apply(variables, tokens, method="embed_texts")     # [T, E] float32, unit norm
"""

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.image_text.text_transformer import TextTransformer
from jaxvision.models.transformer import ACTIVATIONS, partitioned
from jaxvision.models.vit import ViT


def l2_normalize(z: jnp.ndarray) -> jnp.ndarray:
    """z / (||z|| + 1e-8) along the last axis, in float32 (big_vision's normalisation)."""
    z = z.astype(jnp.float32)
    return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)


class TwoTowers(nn.Module):
    """The two-tower model; use `SigLIP` or `CLIP` (or the named sizes in
    `jaxvision.models.image_text`), whose defaults give each its published design.

    Class attributes: `family` ("siglip" / "clip") and `loss` ("sigmoid" / "softmax": which of
    `jaxvision.ops.contrastive`'s losses trains it).
    """

    family: ClassVar[str] = "two_towers"
    loss: ClassVar[str] = "softmax"

    embed_dim: int = 512
    # Image tower: jaxvision.models.vit.ViT's geometry.
    image_size: int = 224
    patch_size: int = 16
    image_width: int = 768
    image_depth: int = 12
    image_mlp_dim: int = 3072
    image_heads: int = 12
    image_pool: str = "token"
    image_pre_norm: bool = True
    image_patch_bias: bool = False
    image_proj: bool = True
    # Text tower: TextTransformer's.
    vocab_size: int = 49408
    context_length: int = 77
    text_width: int = 512
    text_depth: int = 12
    text_mlp_dim: int = 2048
    text_heads: int = 8
    text_causal: bool = True
    text_pool: str = "argmax"
    text_proj_bias: bool = False
    # exp(t) and b at initialisation; bias_init None: no bias.
    temperature_init: float = 1 / 0.07
    bias_init: float | None = None
    # Both towers' MLP nonlinearity (jaxvision.models.transformer.ACTIVATIONS) and LayerNorm eps.
    activation: str = "gelu"
    norm_epsilon: float = 1e-5
    dropout_rate: float = 0.0
    remat: bool = False
    attention: str = "auto"
    dtype: Any = jnp.float32  # compute dtype; parameters and embeddings stay float32

    def __post_init__(self):
        # Checked at build, before any tower is made.
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"unknown image-text activation {self.activation!r}: choose one of "
                f"{', '.join(ACTIVATIONS)}"
            )
        if not self.image_proj and self.embed_dim != self.image_width:
            raise UserError(
                f"an image tower without projection gives embeddings of its width "
                f"{self.image_width}, not embed_dim {self.embed_dim}: set embed_dim="
                f"{self.image_width} or image_proj=True"
            )
        super().__post_init__()

    def setup(self):
        self.img = ViT(
            num_classes=0,
            patch_size=self.patch_size,
            width=self.image_width,
            depth=self.image_depth,
            mlp_dim=self.image_mlp_dim,
            num_heads=self.image_heads,
            image_size=self.image_size,
            pool=self.image_pool,
            class_token=self.image_pool == "token",
            pre_norm=self.image_pre_norm,
            patch_bias=self.image_patch_bias,
            activation=self.activation,
            norm_epsilon=self.norm_epsilon,
            dropout_rate=self.dropout_rate,
            remat=self.remat,
            attention=self.attention,
            dtype=self.dtype,
        )
        if self.image_proj:
            self.img_proj = nn.Dense(
                self.embed_dim,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=partitioned(
                    nn.initializers.normal(self.image_width**-0.5), ("embed", None)
                ),
            )
        self.txt = TextTransformer(
            embed_dim=self.embed_dim,
            vocab_size=self.vocab_size,
            context_length=self.context_length,
            width=self.text_width,
            depth=self.text_depth,
            mlp_dim=self.text_mlp_dim,
            num_heads=self.text_heads,
            causal=self.text_causal,
            pool=self.text_pool,
            proj_bias=self.text_proj_bias,
            activation=self.activation,
            norm_epsilon=self.norm_epsilon,
            dropout_rate=self.dropout_rate,
            remat=self.remat,
            attention=self.attention,
            dtype=self.dtype,
        )
        t0 = math.log(self.temperature_init)
        self.t = self.param("t", lambda _, shape: jnp.full(shape, t0, jnp.float32), (1,))
        if self.bias_init is not None:
            b0 = float(self.bias_init)
            self.b = self.param("b", lambda _, shape: jnp.full(shape, b0, jnp.float32), (1,))

    def embed_images(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """images: [B, S, S, C] float (normalised), S = image_size → [B, embed_dim] float32,
        unit L2 norm."""
        z = self.img(images, train)
        if self.image_proj:
            z = self.img_proj(z)
        return l2_normalize(z)

    def embed_texts(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """tokens: [T, L] int, L <= context_length → [T, embed_dim] float32, unit L2 norm."""
        return l2_normalize(self.txt(tokens, train))

    def logits(self, image: jnp.ndarray, text: jnp.ndarray) -> jnp.ndarray:
        """Normalised embeddings image: [B, E], text: [T, E] → [B, T] float32:
        exp(t) * image @ text.T (+ b)."""
        scores = jnp.exp(self.t[0]) * (image @ text.T)
        return scores + self.b[0] if self.bias_init is not None else scores

    def __call__(self, images: jnp.ndarray, tokens: jnp.ndarray, train: bool = False) -> dict:
        """images: [B, S, S, C], tokens: [T, L] → {"image": [B, E], "text": [T, E] (unit norm,
        float32), "logits": [B, T] float32, "t": the log logit scale (scalar), "b": the bias
        (scalar, SigLIP)}: what the contrastive losses read."""
        image, text = self.embed_images(images, train), self.embed_texts(tokens, train)
        out = {"image": image, "text": text, "logits": self.logits(image, text), "t": self.t[0]}
        if self.bias_init is not None:
            out["b"] = self.b[0]
        return out


class CLIP(TwoTowers):
    """open_clip's CLIP: ViT with a class token, `ln_pre` and a bias-free patch projection,
    a causal text tower pooled at end-of-text, bias-free projections, softmax loss; exact GELU
    and LayerNorm eps 1e-5 as open_clip (OpenAI's weights: activation="quick_gelu")."""

    family: ClassVar[str] = "clip"
    loss: ClassVar[str] = "softmax"


class SigLIP(TwoTowers):
    """big_vision's SigLIP: ViT without class token pooled by a MAP head, no image projection;
    a bidirectional text tower pooled at the last token with a biased projection; sigmoid loss
    with a learned bias; tanh-approximate GELU and LayerNorm eps 1e-6 as big_vision."""

    family: ClassVar[str] = "siglip"
    loss: ClassVar[str] = "sigmoid"

    embed_dim: int = 768
    image_pool: str = "map"
    image_pre_norm: bool = False
    image_patch_bias: bool = True
    image_proj: bool = False
    vocab_size: int = 32_000
    context_length: int = 64
    text_width: int = 768
    text_mlp_dim: int = 3072
    text_heads: int = 12
    text_causal: bool = False
    text_pool: str = "last"
    text_proj_bias: bool = True
    temperature_init: float = 10.0
    bias_init: float | None = -10.0
    activation: str = "gelu_tanh"
    norm_epsilon: float = 1e-6
