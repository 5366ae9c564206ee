"""The R50+ViT hybrid's stem: timm's ResNetV2 (not pre-activation) with weight-standardised
convolutions and GroupNorm, the backbone `jaxvision.models.vit.PatchEmbed` runs before its patches
when `backbone_stages` is set. Submodules are named after timm's (`stem/conv`, `stages_0/blocks_0/
conv1`, `norm1`, `downsample/conv`) so `jaxvision.weights.timm` maps them one to one."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class StdConv(nn.Module):
    """Weight-standardised conv, TF 'SAME' padding, no bias (timm's `StdConv2dSame`, eps 1e-8).

    x: [B, H, W, C] → [B, ceil(H/strides), ceil(W/strides), features].
    """

    features: int
    kernel_size: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.he_normal(), shape, jnp.float32)
        # Standardise each output filter (torch reduces [I, kH, kW]; here [kH, kW, I]).
        mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / jnp.sqrt(var + 1e-8)
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            (self.strides, self.strides),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


def group_norm(name: str, dtype: Any) -> nn.GroupNorm:
    return nn.GroupNorm(
        num_groups=32,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
        name=name,
    )


class BottleneckV2(nn.Module):
    """1x1 → 3x3 (strided) → 1x1 x4, GroupNorm after each conv, ReLU after the sum.

    x: [B, H, W, C] → [B, H/strides, W/strides, 4 * features].
    """

    features: int
    strides: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        out = 4 * self.features
        shortcut = x
        if self.strides != 1 or x.shape[-1] != out:
            proj = _Downsample(out, self.strides, self.dtype, name="downsample")
            shortcut = proj(x)
        y = StdConv(self.features, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(group_norm("norm1", self.dtype)(y))
        y = StdConv(self.features, 3, self.strides, self.dtype, name="conv2")(y)
        y = nn.relu(group_norm("norm2", self.dtype)(y))
        y = StdConv(out, 1, dtype=self.dtype, name="conv3")(y)
        y = group_norm("norm3", self.dtype)(y)
        return nn.relu(y + shortcut)


class _Downsample(nn.Module):
    features: int
    strides: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = StdConv(self.features, 1, self.strides, self.dtype, name="conv")(x)
        return group_norm("norm", self.dtype)(x)


class _Stem(nn.Module):
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = StdConv(64, 7, 2, self.dtype, name="conv")(x)
        x = nn.relu(group_norm("norm", self.dtype)(x))
        # 'SAME' pads with -inf, as timm's MaxPool2dSame.
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


class _Stage(nn.Module):
    num_blocks: int
    features: int
    strides: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for j in range(self.num_blocks):
            strides = self.strides if j == 0 else 1
            x = BottleneckV2(self.features, strides, self.dtype, name=f"blocks_{j}")(x)
        return x


class ResNetV2Backbone(nn.Module):
    """timm's hybrid backbone: 7x7/2 stem + 3x3/2 max pool, then bottleneck stages (stride 1, 2,
    2, ...). x: [B, H, W, 3] → [B, H/s, W/s, 256 * 2**(len(stage_sizes)-1)], s = 4 * 2**(S-1)."""

    stage_sizes: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = _Stem(self.dtype, name="stem")(x)
        for i, n in enumerate(self.stage_sizes):
            x = _Stage(n, 64 * 2**i, 1 if i == 0 else 2, self.dtype, name=f"stages_{i}")(x)
        return x
