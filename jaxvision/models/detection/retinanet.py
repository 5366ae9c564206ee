"""RetinaNet (Lin et al., 2017) in torchvision's geometry: ResNet body → FPN → shared head.

`RetinaNet.__call__` returns the head outputs in torchvision's layout; anchors, losses and
post-processing live elsewhere (jaxvision.ops, jaxvision.tasks.retinanet_loss). Submodule names
follow torchvision's state dict: `backbone/...` is torch's `backbone.body.*`, `fpn/...`
`backbone.fpn.*`, `head/classification_head/{conv_i, cls_logits}` and
`head/regression_head/{conv_i, bbox_reg}` torch's `head.*.conv.i.0` and output convs.
With num_classes=91, `RetinaNetResNet50` has torchvision's retinanet_resnet50_fpn parameter
count: 34,014,999 with frozen backbone BatchNorm, 34,068,119 with trainable BatchNorm.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.detection.backbones import ResNetBody
from jaxvision.models.detection.fpn import P6_INPUTS, FeaturePyramidNetwork
from jaxvision.models.detection.layers import anchors_last, check_norm
from jaxvision.models.resnet import PAD1, BasicBlock, Bottleneck

ModuleDef = Any

# torchvision's RetinaNet head init: N(0, 0.01) kernels, zero biases.
head_kernel_init = nn.initializers.normal(0.01)


class _HeadBranch(nn.Module):
    """`num_convs` 3x3 conv + ReLU (width kept), then a 3x3 conv to num_anchors * columns named
    `output`. x: [B, H, W, C] → [B, H * W * num_anchors, columns] float32. With norm="group"
    each tower conv drops its bias and is followed by GroupNorm(32) (`conv_i_norm`), as
    torchvision's retinanet_resnet50_fpn_v2 head: it trains from scratch much faster."""

    num_anchors: int
    columns: int
    num_convs: int
    output: str
    output_bias: float
    dtype: Any
    norm: str = ""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = functools.partial(
            nn.Conv,
            kernel_size=(3, 3),
            padding=PAD1,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=head_kernel_init,
            bias_init=nn.initializers.zeros,
        )
        for i in range(self.num_convs):
            if self.norm == "group":
                x = conv(x.shape[-1], use_bias=False, name=f"conv_{i}")(x)
                groups = math.gcd(32, x.shape[-1])
                x = nn.GroupNorm(groups, epsilon=1e-5, dtype=self.dtype, name=f"conv_{i}_norm")(x)
            else:
                x = conv(x.shape[-1], name=f"conv_{i}")(x)
            x = nn.relu(x)
        bias_init = nn.initializers.constant(self.output_bias)
        y = conv(self.num_anchors * self.columns, bias_init=bias_init, name=self.output)(x)
        return anchors_last(y, self.columns)


class RetinaNetHead(nn.Module):
    """torchvision's RetinaNetHead: a classification and a regression branch, each shared over
    the levels. features: [[B, h_l, w_l, C]] → {"cls_logits": [B, A, num_classes],
    "bbox_regression": [B, A, 4]} float32, A = sum_l h_l * w_l * num_anchors, level by level.

    The classifier's bias starts at -log((1 - p) / p) (p = prior_probability), so every anchor
    starts at foreground probability p and the focal loss is not swamped by easy negatives.
    """

    num_classes: int
    num_anchors: int
    num_convs: int = 4
    prior_probability: float = 0.01
    norm: str = ""  # "" (torchvision's v1 head) or "group" (GroupNorm, as its v2 head)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> dict[str, jnp.ndarray]:
        prior = -math.log((1 - self.prior_probability) / self.prior_probability)
        branch = functools.partial(
            _HeadBranch,
            num_anchors=self.num_anchors,
            num_convs=self.num_convs,
            dtype=self.dtype,
            norm=self.norm,
        )
        classify = branch(
            columns=self.num_classes,
            output="cls_logits",
            output_bias=prior,
            name="classification_head",
        )
        regress = branch(columns=4, output="bbox_reg", output_bias=0.0, name="regression_head")
        return {
            "cls_logits": jnp.concatenate([classify(f) for f in features], axis=1),
            "bbox_regression": jnp.concatenate([regress(f) for f in features], axis=1),
        }


class RetinaNet(nn.Module):
    """RetinaNet: ResNet C{min_level}..C5 → FPN P{min_level}..P{max_level} → RetinaNetHead.

    Use the presets (`RetinaNetResNet50` is torchvision's retinanet_resnet50_fpn with the
    defaults) or `jaxvision.models.detection.build`. Collections: `params` and `batch_stats`
    (the backbone's BatchNorm: with norm="frozen" all four tensors, else its statistics).

    Anchor configuration (what torchvision's `_default_anchorgen` builds for the defaults):
    level l's sizes are anchor_size * 2**(l - min_level) times 2**(j / scales_per_octave),
    j < scales_per_octave, truncated to int as torchvision does ((32, 40, 50) ... (512, 645,
    812)), each with every aspect ratio (h / w): `anchor_sizes()`, `anchor_aspect_ratios()`,
    `num_anchors()` per position. Inputs are normalised with `image_mean`/`image_std` (on
    [0, 1] pixels), as torchvision's transform does.
    """

    family: ClassVar[str] = "retinanet"
    image_mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    image_std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)
    # The parameters whose shape follows num_classes: what a new head replaces.
    class_outputs: ClassVar[tuple[str, ...]] = ("head/classification_head/cls_logits",)

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    width: int = 64  # the first stage's channels (64: torchvision's ResNets)
    norm: str = "frozen"  # backbone BatchNorm: "frozen" or "batch"
    bn_eps: float = 1e-5  # 0.0 for torchvision's COCO file (its overwrite_eps)
    min_level: int = 3  # the finest pyramid level (stride 2**min_level): 2..5
    max_level: int = 7  # the coarsest: 5 (no extras), 6 (P6) or 7 (P6, P7)
    fpn_channels: int = 256
    p6_input: str = "p5"  # "p5" as torchvision's v1, "c5" as its v2
    head_convs: int = 4
    head_norm: str = ""  # "group": GroupNorm in the head's conv towers (torchvision's v2 head)
    # Add a 3x3 stride-2 conv of C2 to P3 (one step of PANet's bottom-up path): finer detail
    # for the smallest objects, for ~2% more compute at min_level 3. Not in torchvision.
    c2_detail: bool = False
    # Then carry P3's detail up: N_{l+1} = P_{l+1} + a 3x3 stride-2 conv of relu(N_l), level by
    # level (PANet's bottom-up augmentation without its smoothing convs). Not in torchvision.
    bottom_up: bool = False
    prior_probability: float = 0.01
    anchor_size: float = 32  # the base anchor size at min_level; doubles per level
    scales_per_octave: int = 3
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    dtype: Any = jnp.float32  # compute dtype; parameters and BN tensors stay float32

    def __post_init__(self):
        # Checked at construction so a bad config fails before any tracing.
        check_norm(self.norm)
        if self.head_norm not in ("", "group"):
            raise UserError(f"unknown head_norm {self.head_norm!r}: use '' or 'group'")
        if self.p6_input not in P6_INPUTS:
            raise UserError(f"unknown p6_input {self.p6_input!r}: choose one of p5, c5")
        if len(self.stage_sizes) != 4:
            raise UserError(f"RetinaNet needs a 4-stage ResNet, got stage_sizes {self.stage_sizes}")
        if not 2 <= self.min_level <= 5 <= self.max_level <= 7:
            raise UserError(
                f"RetinaNet levels {self.min_level}..{self.max_level}: min_level is 2..5 "
                "(C2..C5) and max_level 5..7 (P6, P7 are extra convs)"
            )
        if self.c2_detail and self.min_level != 3:
            raise UserError(f"c2_detail adds C2 to P3: it needs min_level 3, not {self.min_level}")
        super().__post_init__()

    def levels(self) -> tuple[int, ...]:
        """The pyramid levels, finest first: (3, 4, 5, 6, 7) by default (strides 8 ... 128)."""
        return tuple(range(self.min_level, self.max_level + 1))

    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        """Anchor sizes (sqrt of the area, pixels) per level, torchvision's AnchorGenerator
        `sizes`: ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406),
        (512, 645, 812)) by default."""
        sizes = []
        for i in range(len(self.levels())):
            base = self.anchor_size * 2**i
            spo = self.scales_per_octave
            sizes.append((base, *(int(base * 2 ** (j / spo)) for j in range(1, spo))))
        return tuple(sizes)

    def anchor_aspect_ratios(self) -> tuple[tuple[float, ...], ...]:
        """AnchorGenerator `aspect_ratios` per level: ((0.5, 1.0, 2.0),) * 5 by default."""
        return (tuple(self.aspect_ratios),) * len(self.levels())

    def num_anchors(self) -> int:
        """Anchors per position (9 by default), the same at every level."""
        return self.scales_per_octave * len(self.aspect_ratios)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float (normalised) → {"cls_logits": [B, A, num_classes],
        "bbox_regression": [B, A, 4]} float32, A = sum over levels of h * w * num_anchors()
        in torchvision's order (level by level, positions row-major, then the anchors of a
        position). Level l's map is ceil(H / 2**l) x ceil(W / 2**l): at 320x416, 40x52, 20x26,
        10x13, 5x7, 3x4 and A = 24,993. With `features`: the pyramid maps [[B, h, w,
        fpn_channels]] finest first, in the compute dtype, whose shapes place the anchors.
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
            p6_input=self.p6_input,
            dtype=self.dtype,
            name="fpn",
        )([body[f"C{level}"] for level in range(self.min_level, 6)])
        down = functools.partial(
            nn.Conv,
            self.fpn_channels,
            (3, 3),
            strides=(2, 2),
            padding=PAD1,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        pyramid = list(pyramid)
        if self.c2_detail:
            pyramid[0] = pyramid[0] + down(name="c2_detail")(body["C2"])
        if self.bottom_up:
            for i in range(1, len(pyramid)):
                step = down(name=f"bottom_up_{i}")(nn.relu(pyramid[i - 1]))
                pyramid[i] = pyramid[i] + step
        outputs = RetinaNetHead(
            self.num_classes,
            self.num_anchors(),
            num_convs=self.head_convs,
            prior_probability=self.prior_probability,
            norm=self.head_norm,
            dtype=self.dtype,
            name="head",
        )(pyramid)
        # With `features` the head still runs (XLA drops it), so init creates the same params.
        return pyramid if features else outputs


RetinaNetResNet18 = functools.partial(RetinaNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
RetinaNetResNet34 = functools.partial(RetinaNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
RetinaNetResNet50 = functools.partial(RetinaNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
