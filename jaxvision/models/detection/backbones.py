"""Detection backbones in torchvision's geometry: a ResNet body returning C2..C5, and SSD's
VGG-16 feature extractor.

Submodules are named after torchvision's modules so state dicts map by rule: the ResNet body
as the classifier (`conv1`, `bn1`, `layer2_0/downsample_conv`: torch's `backbone.body.*`), the
SSD extractor after the `nn.Sequential` indices of torch's `SSDFeatureExtractorVGG`
(`features_21` is `backbone.features.21`, `extra_0_7_1` the dilated fc6 `backbone.extra.0.7.1`).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models import vgg
from jaxvision.models.detection.layers import check_norm, norm_factory, xavier_uniform
from jaxvision.models.resnet import PAD1, conv_kernel_init

ModuleDef = Any


class ResNetBody(nn.Module):
    """ResNet v1.5 (`jaxvision.models.resnet` blocks) without the pool and classifier, as
    torchvision's `IntermediateLayerGetter` over a ResNet.

    images [B, H, W, 3] → {"C2": [B, H/4, W/4, c], "C3": /8, "C4": /16, "C5": /32} in the compute
    dtype, each side rounded up (a 7x7/2 conv, a 3x3/2 pool and three strided stages, all padded
    torch's way). c = width * 2**i * expansion: ResNet-50 gives 256, 512, 1024, 2048.
    `norm`: "frozen" (FrozenBatchNorm, torchvision's choice with pretrained weights; eps
    `bn_eps`, 0.0 for torchvision's COCO RetinaNet file) or "batch" (trainable BatchNorm).
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    width: int = 64
    norm: str = "frozen"
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32

    def __post_init__(self):
        check_norm(self.norm)
        super().__post_init__()

    def channels(self) -> tuple[int, ...]:
        """The channel counts of C2..C5."""
        expansion = self.block_cls.expansion
        return tuple(self.width * 2**i * expansion for i in range(len(self.stage_sizes)))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> dict[str, jnp.ndarray]:
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=conv_kernel_init,
        )
        norm = norm_factory(self.norm, train, self.dtype, self.bn_eps)
        x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD1)
        stages = {}
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    features=self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    conv=conv,
                    norm=norm,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
            stages[f"C{i + 2}"] = x
        return stages


# SSD300's extra blocks after fc7: (1x1 conv channels, 3x3 conv channels, its stride, padding).
SSD300_EXTRA_BLOCKS = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))


def max_pool_ceil(x: jnp.ndarray) -> jnp.ndarray:
    """torch's MaxPool2d(2, 2, ceil_mode=True): an odd side keeps its last row/column as a
    window of its own (75 → 38, where floor mode gives 37). x: [B, H, W, C]."""
    pads = [(0, n % 2) for n in x.shape[1:3]]
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pads)  # pads with -inf


class SSDVGG16(nn.Module):
    """SSD's VGG-16 feature extractor (torchvision's `SSDFeatureExtractorVGG` over `vgg16`).

    images [B, H, W, 3] → a list of maps [B, h, w, c] in the compute dtype, shallow to deep:
    conv4_3 (after its ReLU) L2-normalised over channels and scaled by a learnable per-channel
    `scale_weight` (initialised to `scale_init`, 20), then fc7 and one map per extra block.
    pool3 rounds up (ceil mode), pool5 is 3x3/1, fc6 a 3x3 conv with dilation 6 and fc7 a 1x1
    conv, both `fc_channels` wide. At 300x300 with the defaults: 38x38x512, 19x19x1024,
    10x10x512, 5x5x256, 3x3x256, 1x1x256 (SSD300).

    `width` scales the VGG body's channels (64 is VGG-16's: 64 ... 512); `fc_channels` and
    `extra_blocks` ((mid, out, stride, padding) per block) are absolute.
    Init as torchvision: the VGG convs kaiming-normal (fan_out), fc6/fc7 and the extras
    xavier-uniform, biases 0.
    """

    width: int = 64
    fc_channels: int = 1024
    extra_blocks: Sequence[tuple[int, int, int, int]] = SSD300_EXTRA_BLOCKS
    scale_init: float = 20.0
    dtype: Any = jnp.float32

    def channels(self) -> tuple[int, ...]:
        """The channel counts of the maps, shallow to deep."""
        return (512 * self.width // 64, self.fc_channels, *(b[1] for b in self.extra_blocks))

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> list[jnp.ndarray]:
        def conv(x, features, kernel, name, init=xavier_uniform, **kwargs):  # conv + ReLU
            layer = nn.Conv(
                features,
                kernel,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=init,
                bias_init=nn.initializers.zeros,
                name=name,
                **kwargs,
            )
            return nn.relu(layer(x))

        outputs = []
        # Walk VGG-16's `features` as torch numbers it (a conv and its ReLU take two indices, a
        # pool one), without the last pool. torch's extractor splits it at pool4: the part
        # before is `features`, the rest (pool4, conv5_x) starts `extra.0`.
        prefix, index, pools = "features", 0, 0
        for v in vgg.CFGS["vgg16"][:-1]:
            if v == "M":
                pools += 1
                if pools == 4:
                    outputs.append(self._rescale(x))
                    prefix, index = "extra_0", 0
                x = max_pool_ceil(x) if pools == 3 else nn.max_pool(x, (2, 2), strides=(2, 2))
                index += 1
                continue
            x = conv(
                x,
                v * self.width // 64,
                (3, 3),
                f"{prefix}_{index}",
                init=vgg.conv_kernel_init,
                padding=PAD1,
            )
            index += 2
        # torch's extra.0.7: pool5 (3x3/1), fc6 (dilated), ReLU, fc7, ReLU.
        x = nn.max_pool(x, (3, 3), strides=(1, 1), padding=PAD1)
        x = conv(x, self.fc_channels, (3, 3), "extra_0_7_1", padding=6, kernel_dilation=6)
        x = conv(x, self.fc_channels, (1, 1), "extra_0_7_3")
        outputs.append(x)
        for k, (mid, out, stride, pad) in enumerate(self.extra_blocks, start=1):
            x = conv(x, mid, (1, 1), f"extra_{k}_0")
            x = conv(x, out, (3, 3), f"extra_{k}_2", strides=stride, padding=pad)
            outputs.append(x)
        return outputs

    def _rescale(self, x: jnp.ndarray) -> jnp.ndarray:
        """scale_weight * x / max(||x||_2 over channels, 1e-12), torch's F.normalize; the norm
        in float32, which bfloat16 would round to 3 digits."""
        weight = self.param(
            "scale_weight", nn.initializers.constant(self.scale_init), (x.shape[-1],), jnp.float32
        )
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
        return (weight * (x32 / jnp.maximum(norm, 1e-12))).astype(self.dtype)
