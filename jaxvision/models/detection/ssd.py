"""SSD (Liu et al., 2016) in torchvision's geometry: VGG-16 extractor → per-level 3x3 heads.

`SSD.__call__` returns the head outputs in torchvision's layout; default boxes, losses and
post-processing live elsewhere (jaxvision.ops, jaxvision.tasks.ssd_loss). Submodule names follow
torchvision's state dict: `backbone/...` is torch's `backbone.*` (see
`backbones.SSDVGG16`), `head/classification_head/module_list_i` and
`head/regression_head/module_list_i` torch's `head.*.module_list.i`. With num_classes=91 the
defaults are torchvision's ssd300_vgg16: 35,641,826 parameters.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.detection.backbones import SSD300_EXTRA_BLOCKS, SSDVGG16
from jaxvision.models.detection.layers import anchors_last, xavier_uniform
from jaxvision.models.resnet import PAD1


class _ScoringHead(nn.Module):
    """One 3x3 conv per level to num_anchors[l] * columns (`module_list_l`, xavier init).
    features: [[B, h_l, w_l, c_l]] → [B, sum_l h_l * w_l * num_anchors[l], columns] float32."""

    num_anchors: Sequence[int]
    columns: int
    dtype: Any

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
        outputs = []
        for i, (x, anchors) in enumerate(zip(features, self.num_anchors, strict=True)):
            y = nn.Conv(
                anchors * self.columns,
                (3, 3),
                padding=PAD1,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=xavier_uniform,
                bias_init=nn.initializers.zeros,
                name=f"module_list_{i}",
            )(x)
            outputs.append(anchors_last(y, self.columns))
        return jnp.concatenate(outputs, axis=1)


class SSDHead(nn.Module):
    """torchvision's SSDHead. features → {"cls_logits": [B, A, num_classes],
    "bbox_regression": [B, A, 4]} float32, A = sum_l h_l * w_l * num_anchors[l]."""

    num_classes: int
    num_anchors: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> dict[str, jnp.ndarray]:
        anchors = tuple(self.num_anchors)
        classify = _ScoringHead(anchors, self.num_classes, self.dtype, name="classification_head")
        regress = _ScoringHead(anchors, 4, self.dtype, name="regression_head")
        return {"cls_logits": classify(features), "bbox_regression": regress(features)}


class SSD(nn.Module):
    """SSD: `SSDVGG16` maps → `SSDHead`. Collections: `params` only (VGG-16 has no BatchNorm).

    The defaults are torchvision's ssd300_vgg16. Default-box configuration (torchvision's
    DefaultBoxGenerator arguments): `aspect_ratios` per level (each adds 2 boxes: r and 1/r, to
    the 2 square ones), `scales` (one per level plus one; fractions of `image_size`), `steps`
    (pixels between box centres per level), `clip`, and `image_size`, the square input the
    steps and scales are for; `num_anchors()` gives the boxes per position. Inputs are
    normalised with `image_mean`/`image_std` (on [0, 1] pixels): torchvision's SSD subtracts a
    mean and multiplies by 255, so the network sees [0, 255]-scale values.
    """

    family: ClassVar[str] = "ssd"
    image_mean: ClassVar[tuple[float, ...]] = (0.48235, 0.45882, 0.40784)
    image_std: ClassVar[tuple[float, ...]] = (1 / 255, 1 / 255, 1 / 255)
    # The parameters whose shape follows num_classes: what a new head replaces.
    class_outputs: ClassVar[tuple[str, ...]] = ("head/classification_head",)

    num_classes: int
    width: int = 64  # VGG-16's channels scaled by width / 64
    fc_channels: int = 1024
    extra_blocks: Sequence[tuple[int, int, int, int]] = SSD300_EXTRA_BLOCKS
    scale_init: float = 20.0
    image_size: int = 300
    aspect_ratios: Sequence[Sequence[int]] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    scales: Sequence[float] = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
    steps: Sequence[int] = (8, 16, 32, 64, 100, 300)
    clip: bool = True
    dtype: Any = jnp.float32

    def __post_init__(self):
        levels = 2 + len(self.extra_blocks)
        if (len(self.aspect_ratios), len(self.scales), len(self.steps)) != (
            levels,
            levels + 1,
            levels,
        ):
            raise UserError(
                f"SSD with {len(self.extra_blocks)} extra blocks has {levels} levels: it needs "
                f"{levels} aspect_ratios, {levels + 1} scales and {levels} steps, got "
                f"{len(self.aspect_ratios)}, {len(self.scales)}, {len(self.steps)}"
            )
        super().__post_init__()

    def num_anchors(self) -> tuple[int, ...]:
        """Default boxes per position, per level: (4, 6, 6, 6, 4, 4) for SSD300."""
        return tuple(2 + 2 * len(ratios) for ratios in self.aspect_ratios)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float (normalised) → {"cls_logits": [B, A, num_classes],
        "bbox_regression": [B, A, 4]} float32 in torchvision's order (level by level,
        positions row-major, then the boxes of a position). At 300x300: maps 38, 19, 10, 5, 3,
        1 and A = 8,732. `train` is unused (no BatchNorm or dropout). With `features`: the
        maps [[B, h, w, c]], shallow to deep, in the compute dtype."""
        del train
        maps = SSDVGG16(
            width=self.width,
            fc_channels=self.fc_channels,
            extra_blocks=tuple(self.extra_blocks),
            scale_init=self.scale_init,
            dtype=self.dtype,
            name="backbone",
        )(images)
        outputs = SSDHead(self.num_classes, self.num_anchors(), self.dtype, name="head")(maps)
        return maps if features else outputs
