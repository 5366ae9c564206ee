"""The text tower of an image-text model: a transformer over token ids with learned positions.

One module for both published designs (pick with the fields):
- CLIP (open_clip's `TextTransformer`): `causal=True` (token i sees tokens <= i), pooled at the
  end-of-text token, found as the position of the largest token id (`pool="argmax"`: CLIP's
  tokenizer gives end-of-text the largest id and pads with 0), a bias-free projection.
- SigLIP (big_vision's `text_transformer`): no causal mask, `pool="last"` (its tokenizer pads
  with the end-of-sequence token, so the last position always holds one), a projection with a
  bias (big_vision's `head`).
Both end with a LayerNorm over the tokens (open_clip's `ln_final`, big_vision's
`encoder_norm`). Blocks are the ViT's (`jaxvision.models.transformer.EncoderBlock`, pre-norm),
so tensor parallelism splits them by the same logical axes. Fresh parameters: token embedding
N(0, 0.02²), positions N(0, 0.01²), projection N(0, 1/width), as open_clip.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.transformer import ACTIVATIONS, EncoderBlock, layer_norm, partitioned

POOLS = ("argmax", "last", "first", "mean")


class TextTransformer(nn.Module):
    """tokens: [B, L] int (L <= context_length) → embeddings [B, embed_dim] float32 (not
    normalised); with `features=True` a dict of "embedding" (the same), "pre_logits" ([B, width]
    float32, the pooled token) and "tokens" ([B, L, width], after the final LayerNorm)."""

    embed_dim: int
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    mlp_dim: int = 2048
    num_heads: int = 8
    causal: bool = True
    pool: str = "argmax"
    proj_bias: bool = False
    activation: str = "gelu"
    norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    remat: bool = False
    attention: str = "auto"
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"unknown text activation {self.activation!r}: choose one of "
                f"{', '.join(ACTIVATIONS)}"
            )
        if self.pool not in POOLS:
            raise UserError(f"unknown text pool {self.pool!r}: choose one of {', '.join(POOLS)}")
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, train: bool = False, features: bool = False):
        length = tokens.shape[1]
        if length > self.context_length:
            raise UserError(
                f"text of {length} tokens is longer than the text tower's context_length "
                f"{self.context_length}: tokenize to at most {self.context_length} tokens"
            )
        embed = nn.Embed(
            self.vocab_size,
            self.width,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            embedding_init=partitioned(nn.initializers.normal(0.02), (None, "embed")),
            name="token_embed",
        )
        x = embed(tokens)
        pos = self.param(
            "pos_embed",
            partitioned(nn.initializers.normal(0.01), (None, None, "embed")),
            (1, self.context_length, self.width),
            jnp.float32,
        )
        x = x + pos[:, :length].astype(x.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        for i in range(self.depth):
            x = block_cls(
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.dropout_rate,
                0.0,
                self.attention,
                self.causal,
                self.activation,
                self.norm_epsilon,
                name=f"blocks_{i}",
            )(x, train)
        x = layer_norm("norm", self.dtype, self.norm_epsilon)(x)

        if self.pool == "argmax":
            pooled = x[jnp.arange(x.shape[0]), jnp.argmax(tokens, axis=1)]
        elif self.pool == "last":
            pooled = x[:, -1]
        elif self.pool == "first":
            pooled = x[:, 0]
        else:
            pooled = jnp.mean(x.astype(jnp.float32), axis=1)
        pooled = pooled.astype(jnp.float32)
        proj = nn.Dense(
            self.embed_dim,
            use_bias=self.proj_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.normal(self.width**-0.5), ("embed", None)),
            name="proj",
        )
        z = proj(pooled).astype(jnp.float32)
        if features:
            return {"pre_logits": pooled, "tokens": x, "embedding": z}
        return z
