"""ResNet v1.5 (stride on the 3x3 conv) with torchvision's geometry.

Layer shapes, paddings and parameter counts equal torchvision's, and submodules are named after
torchvision's (`conv1`, `bn1`, `layer2_0/downsample_conv`, `fc`), so torch weights map one to one.
Two known differences from torch, neither of which affects imported weights: flax BatchNorm
updates `batch_stats/var` with the biased batch variance (torch uses the unbiased one), and
`momentum=0.9` here is torch's `momentum=0.1`.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.layers import DropPath, tap, torch_batch_norm

ModuleDef = Any

STEMS = ("imagenet", "small")

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_linear_bias_init(fan_in: int) -> Callable[..., jnp.ndarray]:
    """torch.nn.Linear's default bias init: uniform(±1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# torch.nn.Linear's default kernel init, kaiming_uniform(a=sqrt(5)), is uniform(±1/sqrt(fan_in)).
torch_linear_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

PAD1 = ((1, 1), (1, 1))  # explicit, not 'SAME': stride-2 3x3 convs then cut like torch's


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). x: [B, H, W, C] → [B, H/strides, W/strides, features]."""

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0
    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        s = (self.strides, self.strides)
        y = self.conv(self.features, (3, 3), s, padding=PAD1, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), padding=PAD1, name="conv2")(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual), name="bn2")(y)
        y = DropPath(self.drop_path_rate)(y, train)
        return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
    """1x1 → 3x3 (strided, v1.5) → 1x1 x4 (ResNet-50/101/152).

    x: [B, H, W, C] → [B, H/strides, W/strides, 4 * features].
    """

    features: int
    strides: int
    conv: ModuleDef
    norm: ModuleDef
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        s = (self.strides, self.strides)
        out = self.features * self.expansion
        y = self.conv(self.features, (1, 1), padding="VALID", name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), s, padding=PAD1, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(out, (1, 1), padding="VALID", name="conv3")(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual), name="bn3")(y)
        y = DropPath(self.drop_path_rate)(y, train)
        return nn.relu(y + _shortcut(self, x, out))


def _last_scale_init(zero_init_residual: bool) -> Callable[..., jnp.ndarray]:
    # Zero scale makes each block start as the identity, which helps large-batch training.
    return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


def _shortcut(block: nn.Module, x: jnp.ndarray, out_features: int) -> jnp.ndarray:
    """Identity, or a 1x1 strided projection + BN when the shape changes (torch's rule)."""
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    s = (block.strides, block.strides)
    x = block.conv(out_features, (1, 1), s, padding="VALID", name="downsample_conv")(x)
    return block.norm(name="downsample_bn")(x)


class ResNet(nn.Module):
    """ResNet v1.5. Use the presets (`ResNet18` ... `ResNet152`) or set `stage_sizes`/`block_cls`.

    Collections: `params` (float32) and `batch_stats` (float32). `width` is the first stage's
    channel count (stage i has width * 2**i, times 4 for Bottleneck). `stem="small"` replaces
    the 7x7/2 conv and max pool by a 3x3/1 conv, for 8x8..32x32 inputs.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "fc"

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    width: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    dropout_rate: float = 0.0  # before the classifier
    drop_path_rate: float = 0.0  # stochastic depth, growing linearly to this at the last block
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    def __post_init__(self):
        # Checked at construction so a bad config fails before any tracing.
        if self.stem not in STEMS:
            raise UserError(f"unknown ResNet stem {self.stem!r}: choose one of {', '.join(STEMS)}")
        super().__post_init__()

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: the stage
        outputs "C2".."C5" (one per stage); the last is the map the classifier pools."""
        return tuple(f"C{i + 2}" for i in range(len(self.stage_sizes)))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float (normalised) → logits: [B, num_classes] float32.

        With the imagenet stem a 224x224 input gives 56x56 after the stem and 7x7 after the
        last stage; with the small stem the stem keeps H x W and the last stage is H/8 x W/8.
        With `features`: {"pre_logits": [B, D] float32, "C2".."C5": the stage outputs
        [B, h, w, c] in the compute dtype} (ResNet-50 at 224: 56x56x256 ... 7x7x2048).
        """
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=conv_kernel_init,
        )
        norm = torch_batch_norm(train, self.dtype)

        if self.stem == "imagenet":
            x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD1)
        else:
            x = conv(self.width, (3, 3), padding=PAD1, name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))

        # Stage i's output is the C{i+2} feature map a detection backbone would return.
        stages = {}
        num_blocks_total, block_index = sum(self.stage_sizes), 0
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                rate = self.drop_path_rate * block_index / max(num_blocks_total - 1, 1)
                block_index += 1
                x = self.block_cls(
                    features=self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    zero_init_residual=self.zero_init_residual,
                    drop_path_rate=rate,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            stages[f"C{i + 2}"] = x = tap(f"C{i + 2}", x)

        x = jnp.mean(x, axis=(1, 2))  # [B, C] pre-logits
        head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            # torch.nn.Linear's defaults, so a fresh model trains like torchvision's.
            kernel_init=torch_linear_kernel_init,
            bias_init=torch_linear_bias_init(x.shape[-1]),
            name="fc",
        )
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), **stages}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return head(x).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
