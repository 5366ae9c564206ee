"""MLP-Mixer, laid out like timm's `MlpMixer` (`mixer_b16_224`: 59,880,472 parameters).

Submodules are named after timm's (`stem/proj`, `blocks_3/mlp_tokens/fc1`, `norm`, `head`) so
`jaxvision.weights.timm` maps them one to one. Dropout (`dropout_rate`) sits inside each MLP and
on the residual branches; fresh heads start at zero, as big_vision.
"""

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.layers import DropPath, tap
from jaxvision.models.transformer import MlpBlock, layer_norm


class MixerBlock(nn.Module):
    """Token mixing (an MLP across the N tokens) then channel mixing. x: [B, N, D] → [B, N, D]."""

    tokens_mlp_dim: int
    channels_mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        mlp = functools.partial(
            MlpBlock,
            dtype=self.dtype,
            dropout_rate=self.dropout_rate,
            kernel_init=nn.initializers.lecun_normal(),
        )
        y = layer_norm("norm1", self.dtype)(x)
        y = jnp.swapaxes(y, 1, 2)  # [B, D, N]: the MLP mixes along tokens
        y = mlp(self.tokens_mlp_dim, axes=((None, "mlp"), ("mlp", None)), name="mlp_tokens")(
            y, train
        )
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(jnp.swapaxes(y, 1, 2))
        x = x + DropPath(self.drop_path_rate)(y, train)
        y = layer_norm("norm2", self.dtype)(x)
        y = mlp(self.channels_mlp_dim, name="mlp_channels")(y, train)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return x + DropPath(self.drop_path_rate)(y, train)


class MlpMixer(nn.Module):
    """MLP-Mixer. Use `MixerB16` or set the geometry fields.

    Collections: `params` (float32). The token MLP's size depends on the number of patches, so
    inputs must be image_size x image_size.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "head"

    num_classes: int
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    tokens_mlp_dim: int = 384
    channels_mlp_dim: int = 3072
    image_size: int = 224
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise UserError(
                f"Mixer image_size {self.image_size} is not a multiple of patch_size "
                f"{self.patch_size}"
            )
        super().__post_init__()

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep (`__call__`)."""
        return (*(f"tokens_{i}" for i in range(self.depth)), "tokens")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float (normalised), H = W = image_size → logits [B, classes] f32.

        With `features=True` returns {"pre_logits": [B, D] float32 (mean token),
        "tokens_0".."tokens_{depth-1}": each block's output [B, N, D], "tokens": [B, N, D] after
        the final LayerNorm}, N = (image_size / patch_size)², row-major patches.
        """
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise UserError(
                f"Mixer built for {self.image_size}x{self.image_size} images got "
                f"{x.shape[1]}x{x.shape[2]}: build it with image_size={x.shape[1]}"
            )
        x = _Stem(self.width, self.patch_size, self.dtype, name="stem")(x)
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        blocks = {}
        for i in range(self.depth):
            rate = self.drop_path_rate * i / (self.depth - 1) if self.depth > 1 else 0.0
            x = MixerBlock(
                self.tokens_mlp_dim,
                self.channels_mlp_dim,
                self.dtype,
                self.dropout_rate,
                rate,
                name=f"blocks_{i}",
            )(x, train)
            blocks[f"tokens_{i}"] = x = tap(f"tokens_{i}", x)
        tokens = tap("tokens", layer_norm("norm", self.dtype)(x))
        pre_logits = jnp.mean(tokens.astype(jnp.float32), axis=1)
        head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.zeros,
            name="head",
        )
        if features:
            head(pre_logits)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": pre_logits, **blocks, "tokens": tokens}
        return head(pre_logits).astype(jnp.float32)


class _Stem(nn.Module):
    """Patchify: [B, H, W, C] → [B, H/p, W/p, width] (timm's `stem.proj`)."""

    width: int
    patch_size: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        p = self.patch_size
        return nn.Conv(
            self.width,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="proj",
        )(x)


MixerB16 = functools.partial(
    MlpMixer, patch_size=16, width=768, depth=12, tokens_mlp_dim=384, channels_mlp_dim=3072
)
