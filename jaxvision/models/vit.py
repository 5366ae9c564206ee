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

The blocks, attention, MLP and MAP head live in `jaxvision.models.transformer` (shared with the
image-text text tower), the hybrid's ResNetV2 stem in `jaxvision.models.vit_hybrid`.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.attention import (  # noqa: F401 (attention_implementation, traced_for: API)
    attention_implementation,
    cudnn_attention,
    target_platform,
    traced_for,
)
from jaxvision.models.layers import DropPath, tap  # noqa: F401 (DropPath: API)
from jaxvision.models.transformer import (  # noqa: F401 (the pieces' old home: API)
    ACTIVATIONS,
    EMBED_HEADS_KV,
    EMBED_MLP,
    HEADS_KV_EMBED,
    MLP_EMBED,
    Attention,
    EncoderBlock,
    MAPHead,
    MlpBlock,
    layer_norm,
    partitioned,
)
from jaxvision.models.vit_hybrid import ResNetV2Backbone

POOLS = ("token", "gap", "map")
POSEMBS = ("learn", "sincos2d")
ATTENTIONS = ("auto", "xla", "cudnn")


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
    blocks, CLIP's `ln_pre`) and `patch_bias=False`. `activation` (`ACTIVATIONS`) and
    `norm_epsilon` match other references (big_vision: "gelu_tanh"; open_clip: eps 1e-5).
    `num_classes=0`: no head, the model returns the pooled features [B, D] float32 (an
    image-text model's image tower).
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
    activation: str = "gelu"
    norm_epsilon: float = 1e-6
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
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"unknown ViT activation {self.activation!r}: choose one of "
                f"{', '.join(ACTIVATIONS)}"
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
            x = layer_norm("norm_pre", self.dtype, self.norm_epsilon)(x)
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
                False,
                self.activation,
                self.norm_epsilon,
                name=f"blocks_{i}",
            )(x, train)
            blocks[f"tokens_{i}"] = x = tap(f"tokens_{i}", x)
        tokens = tap("tokens", layer_norm("norm", self.dtype, self.norm_epsilon)(x))

        num_prefix = int(self.class_token)
        if self.pool == "token":
            pre_logits = tokens[:, 0]
        elif self.pool == "map":
            pool = MAPHead(
                self.num_heads,
                self.mlp_dim,
                self.dtype,
                self.activation,
                self.norm_epsilon,
                name="attn_pool",
            )
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
