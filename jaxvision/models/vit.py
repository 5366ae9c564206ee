"""Vision Transformer (ViT) and the R50+ViT hybrid, laid out like timm's `VisionTransformer`.

Parameter counts equal timm's (`vit_base_patch16_224`, ..., `vit_base_r50_s16_224`) and submodules
are named after timm's (`patch_embed/proj`, `blocks_3/attn/query`, `blocks_3/mlp/fc1`, `norm`,
`head`), so `jaxvision.weights.timm` maps them one to one; timm's fused `attn.qkv` becomes
`query`/`key`/`value` kernels of shape [D, heads, D/heads], as in big_vision.

Differences from timm, none of which changes imported weights:
- Attention probabilities get no dropout: `jax.nn.dot_product_attention` (cuDNN's fused kernel
  on GPU, see `attention`) has none. `dropout_rate` applies after the position embedding, inside
  the MLP and on each residual branch, as big_vision.
- `pool="gap"` averages the patch tokens after the final LayerNorm `norm`, as big_vision (timm's
  `global_pool="avg", fc_norm=False`), so token and gap models share one parameter layout.
- Fresh parameters are initialised as big_vision: xavier-uniform kernels, zero head.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.attention import (  # noqa: F401 (attention_implementation, traced_for: API)
    attention_implementation,
    cudnn_attention,
    target_platform,
    traced_for,
)
from jaxvision.models.layers import DropPath, record_attention, tap, wants_attention
from jaxvision.models.vit_hybrid import ResNetV2Backbone

POOLS = ("token", "gap", "map")
POSEMBS = ("learn", "sincos2d")
ATTENTIONS = ("auto", "xla", "cudnn")

# Logical axis names of the kernels, for tensor parallelism: `jaxvision.sharding.LOGICAL_RULES`
# maps "mlp" and "heads" to the mesh's model axis and keeps "embed"/"kv" whole (Megatron-style).
# Without rules the annotations change nothing; `model.init` returns `nn.LogicallyPartitioned`
# boxes, which `model.apply` reads as they are and `nn.meta.unbox` strips (the train state does).
EMBED_MLP = ("embed", "mlp")
MLP_EMBED = ("mlp", "embed")
EMBED_HEADS_KV = ("embed", "heads", "kv")
HEADS_KV_EMBED = ("heads", "kv", "embed")


def partitioned(init, axes: tuple[str | None, ...]):
    """`init` with logical `axes` (one name, or None, per dimension of the parameter)."""
    return nn.with_logical_partitioning(init, axes)


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    # timm's eps; two-pass variance, as torch, so imported models match to 1e-5.
    return nn.LayerNorm(
        epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name
    )


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> jnp.ndarray:
    """big_vision's fixed 2-D sin-cos position embedding: [1, h * w, width] float32.

    Each quarter of the channels is sin(x), cos(x), sin(y), cos(y) at width/4 frequencies.
    """
    if width % 4:
        raise UserError(f"sincos2d position embedding needs a width divisible by 4, got {width}")
    y, x = jnp.mgrid[:h, :w]
    omega = jnp.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = jnp.einsum("m,d->md", y.flatten(), omega)
    x = jnp.einsum("m,d->md", x.flatten(), omega)
    pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)
    return pe[None].astype(jnp.float32)


class MlpBlock(nn.Module):
    """fc1 → exact GELU (torch's) → dropout → fc2. x: [..., D] → [..., D]."""

    mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    kernel_init: Any = nn.initializers.xavier_uniform()
    axes: tuple[tuple[str | None, ...], tuple[str | None, ...]] = (EMBED_MLP, MLP_EMBED)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        fc1_init, fc2_init = (partitioned(self.kernel_init, axes) for axes in self.axes)
        bias_init = nn.initializers.normal(1e-6)  # big_vision: tiny, not zero
        fc1_bias_init = partitioned(bias_init, self.axes[0][-1:])
        y = dense(self.mlp_dim, kernel_init=fc1_init, bias_init=fc1_bias_init, name="fc1")(x)
        y = nn.gelu(y, approximate=False)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return dense(x.shape[-1], kernel_init=fc2_init, bias_init=bias_init, name="fc2")(y)


class Attention(nn.Module):
    """Multi-head self-attention through `jax.nn.dot_product_attention`. x: [B, N, D] → [B, N, D].

    Kernels: query/key/value [D, heads, D/heads], out [heads, D/heads, D] (big_vision's layout).
    `implementation`: see `attention_implementation`. `causal`: token i attends to tokens <= i
    only (a text tower read left to right, CLIP's).
    """

    num_heads: int
    dtype: Any = jnp.float32
    implementation: str = "auto"
    causal: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        width = x.shape[-1]
        if width % self.num_heads:
            raise UserError(f"ViT width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        qkv = functools.partial(
            nn.DenseGeneral,
            features=(self.num_heads, head_dim),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), EMBED_HEADS_KV),
            bias_init=partitioned(nn.initializers.zeros, EMBED_HEADS_KV[1:]),
        )
        q, k, v = (qkv(name=name)(x) for name in ("query", "key", "value"))  # [B, N, H, Dh]
        if wants_attention():  # explicit weights, for attention rollout (jaxvision.explain)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / head_dim**0.5
            if self.causal:
                n = logits.shape[-1]
                logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -jnp.inf)
            weights = jax.nn.softmax(logits, axis=-1)
            record_attention(self.scope.path, weights)
            y = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
        else:
            impl = attention_implementation(self.implementation, self.dtype, head_dim)
            if impl == "cudnn":
                y = cudnn_attention(q, k, v, is_causal=self.causal)
            else:
                y = jax.nn.dot_product_attention(
                    q, k, v, is_causal=self.causal, implementation=impl
                )
        return nn.DenseGeneral(
            features=width,
            axis=(-2, -1),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), HEADS_KV_EMBED),
            name="out",
        )(y)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block (timm's `Block`). x: [B, N, D] → [B, N, D]."""

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    attention: str = "auto"
    causal: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = layer_norm("norm1", self.dtype)(x)
        y = Attention(self.num_heads, self.dtype, self.attention, self.causal, name="attn")(y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = x + DropPath(self.drop_path_rate)(y, train)
        y = layer_norm("norm2", self.dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(y, train)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return x + DropPath(self.drop_path_rate)(y, train)


class MAPHead(nn.Module):
    """Multi-head attention pooling (big_vision's `MAPHead`): a learned probe token attends to
    the tokens, then a pre-norm MLP is added to it. x: [B, N, D] → [B, D].

    Parameters: `probe` [1, 1, D]; `attn/query|key|value` [D, heads, D/heads] and `attn/out`
    [heads, D/heads, D] (big_vision's `MultiHeadDotProductAttention_0`); `norm`
    (`LayerNorm_0`); `mlp/fc1|fc2` (`MlpBlock_0`). As big_vision: no residual around the
    attention, xavier-uniform probe and kernels.
    """

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, _, width = x.shape
        if width % self.num_heads:
            raise UserError(f"MAP head width {width} is not divisible by {self.num_heads} heads")
        head_dim = width // self.num_heads
        probe = self.param(
            "probe",
            partitioned(nn.initializers.xavier_uniform(), (None, None, "embed")),
            (1, 1, width),
            jnp.float32,
        )
        probe = jnp.broadcast_to(probe, (b, 1, width)).astype(x.dtype)
        attn = _MAPAttention(self.num_heads, head_dim, self.dtype, name="attn")
        y = attn(probe, x)  # [B, 1, D]
        z = layer_norm("norm", self.dtype)(y)
        y = y + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(z, False)
        return y[:, 0]


class _MAPAttention(nn.Module):
    """The probe's cross-attention: queries [B, 1, D] over tokens [B, N, D] → [B, 1, D]."""

    num_heads: int
    head_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, probe: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        dense = functools.partial(
            nn.DenseGeneral,
            features=(self.num_heads, self.head_dim),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), EMBED_HEADS_KV),
            bias_init=partitioned(nn.initializers.zeros, EMBED_HEADS_KV[1:]),
        )
        q, k, v = dense(name="query")(probe), dense(name="key")(x), dense(name="value")(x)
        y = jax.nn.dot_product_attention(q, k, v)
        return nn.DenseGeneral(
            features=x.shape[-1],
            axis=(-2, -1),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), HEADS_KV_EMBED),
            name="out",
        )(y)


class PatchEmbed(nn.Module):
    """Non-overlapping patches (or backbone features) projected to `width`.

    x: [B, H, W, C] → [B, gh, gw, width], gh = H / (patch_size * backbone stride).
    `use_bias=False`: CLIP's bias-free patch projection.
    """

    width: int
    patch_size: int
    backbone_stages: Sequence[int] = ()
    dtype: Any = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.backbone_stages:
            x = ResNetV2Backbone(self.backbone_stages, self.dtype, name="backbone")(x)
        p = self.patch_size
        return nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, "embed")),
            name="proj",
        )(x)


class ViT(nn.Module):
    """Vision Transformer. Use the presets (`ViT_B16`, ...) or set the geometry fields.

    Collections: `params` (float32). `image_size` fixes the learned position embedding's grid
    (image_size / patch_size per side, / 16 more with the R50 backbone); inputs must have that
    size (`jaxvision.weights.timm` resamples imported embeddings to it). `pool="token"` reads the
    class token, `"gap"` averages the patch tokens, `"map"` pools them with big_vision's MAP head
    (`attn_pool`, a learned probe's attention); `posemb="sincos2d"` is big_vision's fixed
    embedding (no parameter). `backbone_stages` puts timm's ResNetV2 stages before the patch
    embedding (R50+ViT: (3, 4, 9) with patch_size 1). `attention` picks the attention kernel:
    "auto" (cuDNN's fused kernel on GPU in bf16/fp16, XLA elsewhere), "xla" or "cudnn".
    CLIP's image tower: `pre_norm` (a LayerNorm `norm_pre` on the embedded tokens before the
    blocks, CLIP's `ln_pre`) and `patch_bias=False`. `num_classes=0`: no head, the model returns
    the pooled features [B, D] float32 (an image-text model's image tower).
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "head"

    num_classes: int
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    mlp_dim: int = 3072
    num_heads: int = 12
    image_size: int = 224
    pool: str = "token"
    posemb: str = "learn"
    class_token: bool = True
    pre_norm: bool = False
    patch_bias: bool = True
    backbone_stages: Sequence[int] = ()
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    remat: bool = False  # recompute each block in the backward pass (activation memory)
    attention: str = "auto"
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    def __post_init__(self):
        # Checked at construction so a bad config fails before any tracing.
        if self.attention not in ATTENTIONS:
            raise UserError(
                f"unknown ViT attention {self.attention!r}: choose one of {', '.join(ATTENTIONS)}"
            )
        if self.pool not in POOLS:
            raise UserError(f"unknown ViT pool {self.pool!r}: choose one of {', '.join(POOLS)}")
        if self.posemb not in POSEMBS:
            raise UserError(
                f"unknown ViT posemb {self.posemb!r}: choose one of {', '.join(POSEMBS)}"
            )
        if self.pool == "token" and not self.class_token:
            raise UserError("ViT pool='token' needs class_token=True; use pool='gap' without it")
        if self.image_size % self.stride:
            raise UserError(
                f"ViT image_size {self.image_size} is not a multiple of its patch stride "
                f"{self.stride}: set image_size to a multiple of {self.stride} (training resizes "
                f"the images to it) or pick a ViT with a smaller patch (vit_s4: 4)"
            )
        super().__post_init__()

    @property
    def stride(self) -> int:
        """Input pixels per token side: patch_size, times the backbone's 4 * 2**(stages-1)."""
        backbone = 4 * 2 ** (len(self.backbone_stages) - 1) if self.backbone_stages else 1
        return self.patch_size * backbone

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep (`__call__`)."""
        return (*(f"tokens_{i}" for i in range(self.depth)), "tokens")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float (normalised), H = W = image_size → logits [B, classes] f32.

        With `features=True` returns {"pre_logits": [B, D] float32, "tokens_0".."tokens_{depth-1}":
        each block's output [B, N, D], "tokens": [B, N, D] after the final LayerNorm}: N = grid²
        plus the class token first, if any. With pool="token" only the class token reaches the
        head after the last block's attention: Grad-CAM over patches reads tokens_{depth-2}.
        """
        grid = self.image_size // self.stride
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise UserError(
                f"ViT built for {self.image_size}x{self.image_size} images got "
                f"{x.shape[1]}x{x.shape[2]}: build it with image_size={x.shape[1]}"
            )
        x = PatchEmbed(
            self.width,
            self.patch_size,
            self.backbone_stages,
            self.dtype,
            self.patch_bias,
            name="patch_embed",
        )(x)
        b = x.shape[0]
        x = x.reshape(b, grid * grid, self.width)  # row-major patches, as timm's flatten(2)

        cls = None
        if self.class_token:
            cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
            cls = jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype)
        if self.posemb == "learn":
            # timm's layout: the class token has a position too, embedding [1, 1 + N, D].
            n = grid * grid + int(self.class_token)
            pos = self.param(
                "pos_embed",
                partitioned(
                    nn.initializers.normal(1 / math.sqrt(self.width)), (None, None, "embed")
                ),
                (1, n, self.width),
                jnp.float32,
            )
            x = x if cls is None else jnp.concatenate([cls, x], axis=1)
            x = x + pos.astype(x.dtype)
        else:
            # big_vision: fixed embedding on the patches only; the class token goes in after.
            x = x + posemb_sincos_2d(grid, grid, self.width).astype(x.dtype)
            x = x if cls is None else jnp.concatenate([cls, x], axis=1)
        if self.pre_norm:
            x = layer_norm("norm_pre", self.dtype)(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

        # remat: keep only each block's input for the backward pass and recompute the rest,
        # trading ~1/3 more compute for activation memory that no longer grows with depth.
        block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        blocks = {}
        for i in range(self.depth):
            # Stochastic depth grows linearly from 0 at the first block, as timm.
            rate = self.drop_path_rate * i / (self.depth - 1) if self.depth > 1 else 0.0
            x = block_cls(
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.dropout_rate,
                rate,
                self.attention,
                name=f"blocks_{i}",
            )(x, train)
            blocks[f"tokens_{i}"] = x = tap(f"tokens_{i}", x)
        tokens = tap("tokens", layer_norm("norm", self.dtype)(x))

        num_prefix = int(self.class_token)
        if self.pool == "token":
            pre_logits = tokens[:, 0]
        elif self.pool == "map":
            pool = MAPHead(self.num_heads, self.mlp_dim, self.dtype, name="attn_pool")
            pre_logits = pool(tokens[:, num_prefix:])
        else:
            pre_logits = jnp.mean(tokens[:, num_prefix:].astype(jnp.float32), axis=1)
        pre_logits = pre_logits.astype(jnp.float32)
        if not self.num_classes:
            return (
                {"pre_logits": pre_logits, **blocks, "tokens": tokens} if features else pre_logits
            )
        head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.zeros,  # big_vision: a fresh head starts at zero
            name="head",
        )
        if features:
            head(pre_logits)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": pre_logits, **blocks, "tokens": tokens}
        return head(pre_logits).astype(jnp.float32)


ViT_Ti16 = functools.partial(ViT, patch_size=16, width=192, depth=12, mlp_dim=768, num_heads=3)
ViT_S16 = functools.partial(ViT, patch_size=16, width=384, depth=12, mlp_dim=1536, num_heads=6)
# ViT-S with 4x4 patches: 64 tokens on 32x32 images (CIFAR), as ViT-S/16 has on 128x128.
ViT_S4 = functools.partial(ViT, patch_size=4, width=384, depth=12, mlp_dim=1536, num_heads=6)
ViT_B16 = functools.partial(ViT, patch_size=16, width=768, depth=12, mlp_dim=3072, num_heads=12)
ViT_B32 = functools.partial(ViT, patch_size=32, width=768, depth=12, mlp_dim=3072, num_heads=12)
ViT_L16 = functools.partial(ViT, patch_size=16, width=1024, depth=24, mlp_dim=4096, num_heads=16)
ViT_H14 = functools.partial(ViT, patch_size=14, width=1280, depth=32, mlp_dim=5120, num_heads=16)
# ViT-g/14 of "Scaling Vision Transformers" (timm's vit_giant_patch14_224).
ViT_g14 = functools.partial(ViT, patch_size=14, width=1408, depth=40, mlp_dim=6144, num_heads=16)
# ViT-G/14 of the same paper (timm's vit_gigantic_patch14_224, OpenCLIP's ViT-bigG-14 geometry).
ViT_bigG14 = functools.partial(ViT, patch_size=14, width=1664, depth=48, mlp_dim=8192, num_heads=16)
# R50+ViT-B/16 (timm's vit_base_r50_s16_224): 3 ResNetV2 stages (stride 16), then 1x1 patches.
ViT_B16_R50 = functools.partial(
    ViT,
    patch_size=1,
    width=768,
    depth=12,
    mlp_dim=3072,
    num_heads=12,
    backbone_stages=(3, 4, 9),
)
