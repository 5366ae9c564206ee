"""FCOS (Tian et al., 2019), anchor-free, in torchvision's geometry: ResNet body → FPN → head.

`FCOS.__call__` returns the head outputs in torchvision's layout; the points ("anchors": one
square box per position, as torchvision places them), the loss and the post-processing live
elsewhere (jaxvision.ops.anchor_grid, jaxvision.tasks.fcos_loss). Submodule names follow
torchvision's state dict: `backbone/...` is torch's `backbone.body.*`, `fpn/...`
`backbone.fpn.*`, `head/classification_head/{conv_i, conv_i_norm, cls_logits}` and
`head/regression_head/{conv_i, conv_i_norm, bbox_reg, bbox_ctrness}` torch's
`head.*.conv.{3i, 3i + 1}` (one nn.Sequential of conv, GroupNorm, ReLU) and output convs.
With num_classes=91, `FCOSResNet50` has torchvision's fcos_resnet50_fpn parameter count:
32,269,600 with frozen backbone BatchNorm, 32,322,720 with trainable BatchNorm.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.detection.backbones import ResNetBody
from jaxvision.models.detection.fpn import FeaturePyramidNetwork
from jaxvision.models.detection.layers import anchors_last, check_norm
from jaxvision.models.resnet import PAD1, BasicBlock, Bottleneck

ModuleDef = Any

# torchvision's FCOS head init: N(0, 0.01) kernels, zero biases (the classifier's: the prior).
head_kernel_init = nn.initializers.normal(0.01)


def _tower(x: jnp.ndarray, num_convs: int, dtype: Any) -> jnp.ndarray:
    """`num_convs` x (3x3 conv with bias, GroupNorm(32), ReLU), width kept: torchvision's FCOS
    tower, its modules created in the calling head (`conv_i`, `conv_i_norm`). x: [B, H, W, C]
    → [B, H, W, C] in `dtype`. A width that 32 does not divide (the small presets) takes
    gcd(32, C) groups."""
    for i in range(num_convs):
        x = _conv(x.shape[-1], dtype, name=f"conv_{i}")(x)
        x = nn.GroupNorm(
            math.gcd(32, x.shape[-1]),
            epsilon=1e-5,  # torch's GroupNorm default
            use_fast_variance=False,  # E[(x - mean)^2], as torch: no cancellation
            dtype=dtype,
            name=f"conv_{i}_norm",
        )(x)
        x = nn.relu(x)
    return x


def _conv(features: int, dtype: Any, bias: float = 0.0, **kwargs) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        padding=PAD1,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=head_kernel_init,
        bias_init=nn.initializers.constant(bias),
        **kwargs,
    )


class _ClassificationHead(nn.Module):
    num_classes: int
    num_convs: int
    prior_probability: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = _tower(x, self.num_convs, self.dtype)
        prior = -math.log((1 - self.prior_probability) / self.prior_probability)
        logits = _conv(self.num_classes, self.dtype, prior, name="cls_logits")(x)
        return anchors_last(logits, self.num_classes)


class _RegressionHead(nn.Module):
    num_convs: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        x = _tower(x, self.num_convs, self.dtype)
        boxes = nn.relu(_conv(4, self.dtype, name="bbox_reg")(x))  # distances are >= 0
        ctrness = _conv(1, self.dtype, name="bbox_ctrness")(x)
        return anchors_last(boxes, 4), anchors_last(ctrness, 1)


class FCOSHead(nn.Module):
    """torchvision's FCOSHead (one point per position): a classification tower → cls_logits and
    a regression tower → bbox_reg (ReLU: the distances to the box's sides, over the point's
    box size) and bbox_ctrness, each shared over the levels.

    features: [[B, h_l, w_l, C]] → {"cls_logits": [B, A, num_classes], "bbox_regression":
    [B, A, 4], "bbox_ctrness": [B, A, 1]} float32, A = sum_l h_l * w_l, level by level.
    """

    num_classes: int
    num_convs: int = 4
    prior_probability: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> dict[str, jnp.ndarray]:
        classify = _ClassificationHead(
            self.num_classes,
            self.num_convs,
            self.prior_probability,
            self.dtype,
            name="classification_head",
        )
        regress = _RegressionHead(self.num_convs, self.dtype, name="regression_head")
        logits = [classify(f) for f in features]
        boxes, ctrness = zip(*(regress(f) for f in features), strict=True)
        return {
            "cls_logits": jnp.concatenate(logits, axis=1),
            "bbox_regression": jnp.concatenate(boxes, axis=1),
            "bbox_ctrness": jnp.concatenate(ctrness, axis=1),
        }


class FCOS(nn.Module):
    """FCOS: ResNet C3..C5 → FPN P3..P{max_level} (P6 from P5, P7 from relu(P6), torchvision's
    LastLevelP6P7(256, 256)) → FCOSHead.

    Use the presets (`FCOSResNet50` is torchvision's fcos_resnet50_fpn with the defaults) or
    `jaxvision.models.detection.build`. Collections: `params` and `batch_stats` (the
    backbone's BatchNorm: with norm="frozen" all four tensors, else its statistics).

    Point configuration, as torchvision's AnchorGenerator for FCOS: one square box per
    position, of side anchor_size * 2**(l - 3) at level l (8, 16, 32, 64, 128: the strides),
    aspect ratio 1; its centre is the point and its side sets the level's scale range in the
    loss: `anchor_sizes()`, `anchor_aspect_ratios()`, `num_anchors()` (1). Inputs are
    normalised with `image_mean`/`image_std` (on [0, 1] pixels), as torchvision's transform.
    """

    family: ClassVar[str] = "fcos"
    image_mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    image_std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)
    # The parameters whose shape follows num_classes: what a new head replaces.
    class_outputs: ClassVar[tuple[str, ...]] = ("head/classification_head/cls_logits",)

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    width: int = 64  # the first stage's channels (64: torchvision's ResNets)
    norm: str = "frozen"  # backbone BatchNorm: "frozen" or "batch"
    bn_eps: float = 1e-5
    max_level: int = 7  # the coarsest level: 5 (no extras), 6 (P6) or 7 (P6, P7)
    fpn_channels: int = 256
    head_convs: int = 4
    prior_probability: float = 0.01
    anchor_size: float = 8  # the box side at P3 (its stride); doubles per level
    dtype: Any = jnp.float32  # compute dtype; parameters and BN tensors stay float32

    min_level: ClassVar[int] = 3  # torchvision's returned_layers=[2, 3, 4]: C3..C5

    def __post_init__(self):
        # Checked at construction so a bad config fails before any tracing.
        check_norm(self.norm)
        if len(self.stage_sizes) != 4:
            raise UserError(f"FCOS needs a 4-stage ResNet, got stage_sizes {self.stage_sizes}")
        if not 5 <= self.max_level <= 7:
            raise UserError(
                f"FCOS max_level {self.max_level}: 5..7 (P3..P5 from C3..C5; P6, P7 are extra "
                "convs)"
            )
        if self.head_convs < 0 or self.anchor_size <= 0:
            raise UserError(
                f"FCOS head_convs {self.head_convs} and anchor_size {self.anchor_size}: "
                "head_convs is >= 0 and anchor_size > 0"
            )
        if not 0 < self.prior_probability < 1:
            raise UserError(f"prior_probability is in (0, 1), got {self.prior_probability}")
        super().__post_init__()

    def levels(self) -> tuple[int, ...]:
        """The pyramid levels, finest first: (3, 4, 5, 6, 7) by default (strides 8 ... 128)."""
        return tuple(range(self.min_level, self.max_level + 1))

    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        """Box sides per level, torchvision's AnchorGenerator `sizes`: ((8,), (16,), (32,),
        (64,), (128,)) by default."""
        return tuple((self.anchor_size * 2**i,) for i in range(len(self.levels())))

    def anchor_aspect_ratios(self) -> tuple[tuple[float, ...], ...]:
        """AnchorGenerator `aspect_ratios` per level: ((1.0,),) * 5 by default."""
        return ((1.0,),) * len(self.levels())

    def num_anchors(self) -> int:
        """Points per position: 1 (torchvision's FCOS requires it)."""
        return 1

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float (normalised) → {"cls_logits": [B, A, num_classes],
        "bbox_regression": [B, A, 4] (>= 0), "bbox_ctrness": [B, A, 1]} float32, A = sum over
        levels of h * w, in torchvision's order (level by level, positions row-major). Level
        l's map is ceil(H / 2**l) x ceil(W / 2**l): at 320x416, 40x52, 20x26, 10x13, 5x7, 3x4
        and A = 2,777. With `features`: the pyramid maps [[B, h, w, fpn_channels]] finest
        first, in the compute dtype, whose shapes place the points.
        """
        body = ResNetBody(
            self.stage_sizes,
            self.block_cls,
            width=self.width,
            norm=self.norm,
            bn_eps=self.bn_eps,
            dtype=self.dtype,
            name="backbone",
        )(images, train)
        pyramid = FeaturePyramidNetwork(
            self.fpn_channels,
            extra_levels=self.max_level - 5,
            p6_input="p5",
            dtype=self.dtype,
            name="fpn",
        )([body[f"C{level}"] for level in range(self.min_level, 6)])
        outputs = FCOSHead(
            self.num_classes,
            num_convs=self.head_convs,
            prior_probability=self.prior_probability,
            dtype=self.dtype,
            name="head",
        )(pyramid)
        # With `features` the head still runs (XLA drops it), so init creates the same params.
        return pyramid if features else outputs


FCOSResNet18 = functools.partial(FCOS, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
FCOSResNet50 = functools.partial(FCOS, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
