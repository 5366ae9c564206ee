"""Ultralytics YOLO detectors (YOLOv8, YOLO11, YOLO26) in Flax, NHWC: a CSP backbone, a PAN
neck and a decoupled anchor-free head on P3-P5 (strides 8, 16, 32), equal to the reference
(ultralytics 8.4) on the same weights.

Classes. `num_classes` is K with the background counted, as for every jaxvision detector (the
data's classes are 1..K-1), so the head predicts K - 1 classes: the reference's `nc` is
num_classes - 1 (COCO's nc=80 is num_classes=81), and class c of the data is score channel
c - 1. There is no background channel: YOLO scores each class with its own sigmoid.

Inputs: images [B, H, W, 3] float in [0, 1] (the reference divides by 255 and takes no
mean/std: `image_mean` 0, `image_std` 1), H and W multiples of 32.

Outputs of `__call__(images, train=False, features=False)`, all float32, A = sum over
levels of (H / s) * (W / s), in the reference's order (P3 positions row-major, then P4, P5):

  {"boxes": [B, A, 4 * reg_max]   the box branch: per side (left, top, right, bottom, in that
                                  order) reg_max distribution logits over distances 0..reg_max-1
                                  cells (reg_max 16, YOLOv8/11), or the distances themselves in
                                  cells (reg_max 1, YOLO26)
   "cls_logits": [B, A, K - 1]    class logits (sigmoid gives the scores)
   "one2one": {"boxes", "cls_logits"}   end-to-end models only (YOLO26): the one-to-one
                                  branch, computed on stop_gradient'ed features (trained with
                                  top-1 assignment; its top 300 are the detections, no NMS)}

With `features=True`, the three maps the head reads, [[B, H / s, W / s, C_s]] finest first.
`anchor_points`, `decode_boxes` and `end_to_end_top` turn outputs into pixel boxes.

Names (registered in jaxvision.models.detection with the reference's YAML scales [depth, width,
max_channels] as options a caller may override; parameter counts at num_classes=81 equal the
reference's trainable ones: its count less DFL's 16 fixed weights for reg_max 16):
yolov8{n,s,m,l,x} (3,157,184 for n), yolo11{n,s,m,l,x} (2,624,064 for n), yolo26{n,s,m,l,x}
(2,572,280 for n; end-to-end, reg_max 1). Submodules are named after the reference's state dict
(`model_22/cv2_0_0/conv` is its `model.22.cv2.0.0.conv`), so
jaxvision.weights.ultralytics maps files by rule.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.models.detection.yolo_blocks import (
    C2PSA,
    SPPF,
    ConvNormAct,
    CSPStage,
    torch_conv_init,
)
from jaxvision.ops.anchors import anchor_points as ops_anchor_points

STRIDES = (8, 16, 32)

# The eight CSP stages, in layer order (backbone P2..P5, then the neck's top-down P4, P3 and
# bottom-up P4, P5): (channels before scaling, repeats before scaling, inner block, residual
# bottlenecks (C2f only), expansion). "c3k2" blocks become "c3k" at scales m, l and x.
_V8_STAGES = (
    (128, 3, "c2f", True, 0.5),
    (256, 6, "c2f", True, 0.5),
    (512, 6, "c2f", True, 0.5),
    (1024, 3, "c2f", True, 0.5),
    (512, 3, "c2f", False, 0.5),
    (256, 3, "c2f", False, 0.5),
    (512, 3, "c2f", False, 0.5),
    (1024, 3, "c2f", False, 0.5),
)
_V11_BACKBONE = (
    (256, 2, "c3k2", True, 0.25),
    (512, 2, "c3k2", True, 0.25),
    (512, 2, "c3k", True, 0.5),
    (1024, 2, "c3k", True, 0.5),
)
_V11_STAGES = (
    *_V11_BACKBONE,
    (512, 2, "c3k2", True, 0.5),
    (256, 2, "c3k2", True, 0.5),
    (512, 2, "c3k2", True, 0.5),
    (1024, 2, "c3k", True, 0.5),
)
_V26_STAGES = (
    *_V11_BACKBONE,
    (512, 2, "c3k", True, 0.5),
    (256, 2, "c3k", True, 0.5),
    (512, 2, "c3k", True, 0.5),
    (1024, 1, "attn", True, 0.5),  # a bottleneck then a PSA block
)


def _detect_index(psa: bool) -> int:
    """The head's layer index: 22 for YOLOv8, 23 with the C2PSA layer (11, 26)."""
    return 23 if psa else 22


def _cls_tower_paths(index: int, legacy: bool, end2end: bool) -> tuple[str, ...]:
    """Every module of the class towers (their width follows num_classes when it exceeds the
    P3 width, so the whole tower is the class output)."""
    parts = ("0", "1", "2") if legacy else ("0_0", "0_1", "1_0", "1_1", "2")
    branches = ("cv3", "one2one_cv3") if end2end else ("cv3",)
    return tuple(
        f"model_{index}/{b}_{level}_{p}" for b in branches for level in range(3) for p in parts
    )


class DetectHead(nn.Module):
    """The reference's Detect layer: one tower pair per level (weights not shared across
    levels). Box tower cv2_l = 3x3 conv, 3x3 conv, 1x1 conv (bias) to 4 * reg_max; class tower
    cv3_l = two 3x3 convs then a 1x1 conv to `classes` (`legacy`, YOLOv8) or two (depthwise
    3x3, 1x1) pairs then the 1x1 (YOLO11, 26). With `end2end`, a second set named
    one2one_cv2_l / one2one_cv3_l reads the maps through stop_gradient (its loss must not reach
    the backbone, as the reference's detach).

    features: [[B, h_l, w_l, C_l]] → {"boxes": [B, A, 4 * reg_max], "cls_logits": [B, A,
    classes]} float32, level by level, positions row-major (+ "one2one": the same for the
    second set). Biases start as the reference's: box 2.0, class log(5 / classes / (640 /
    stride)^2) (about 5 objects per 640 px image, spread over the classes)."""

    classes: int
    reg_max: int
    legacy: bool
    end2end: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
        outputs = self._branch(features, "", train)
        if self.end2end:
            detached = [jax.lax.stop_gradient(f) for f in features]
            outputs["one2one"] = self._branch(detached, "one2one_", train)
        return outputs

    def _branch(self, features: Sequence[jnp.ndarray], prefix: str, train: bool) -> dict:
        c0 = features[0].shape[-1]
        box_width = max(16, c0 // 4, 4 * self.reg_max)
        cls_width = max(c0, min(self.classes, 100))
        conv = functools.partial(ConvNormAct, dtype=self.dtype)
        boxes, logits = [], []
        for level, (x, stride) in enumerate(zip(features, STRIDES, strict=True)):
            box, cls = f"{prefix}cv2_{level}", f"{prefix}cv3_{level}"
            y = conv(box_width, 3, name=f"{box}_0")(x, train)
            y = conv(box_width, 3, name=f"{box}_1")(y, train)
            boxes.append(self._out(y, 4 * self.reg_max, 2.0, f"{box}_2"))
            y = x
            if self.legacy:
                y = conv(cls_width, 3, name=f"{cls}_0")(y, train)
                y = conv(cls_width, 3, name=f"{cls}_1")(y, train)
            else:
                y = conv(y.shape[-1], 3, groups=y.shape[-1], name=f"{cls}_0_0")(y, train)
                y = conv(cls_width, 1, name=f"{cls}_0_1")(y, train)
                y = conv(cls_width, 3, groups=cls_width, name=f"{cls}_1_0")(y, train)
                y = conv(cls_width, 1, name=f"{cls}_1_1")(y, train)
            prior = math.log(5 / self.classes / (640 / stride) ** 2)
            logits.append(self._out(y, self.classes, prior, f"{cls}_2"))
        return {
            "boxes": jnp.concatenate(boxes, axis=1),
            "cls_logits": jnp.concatenate(logits, axis=1),
        }

    def _out(self, x: jnp.ndarray, features: int, bias: float, name: str) -> jnp.ndarray:
        """A 1x1 output conv with a constant bias → [B, h * w, features] float32."""
        y = nn.Conv(
            features,
            (1, 1),
            kernel_init=torch_conv_init,
            bias_init=nn.initializers.constant(bias),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name=name,
        )(x)
        b, h, w, c = y.shape
        return y.reshape(b, h * w, c).astype(jnp.float32)


def _upsample2(x: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour x2 (torch's nn.Upsample(scale_factor=2, mode="nearest"))."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class YOLO(nn.Module):
    """A YOLO detector; subclasses fix the version (YOLOv8, YOLO11, YOLO26), the registry's
    entries the scale (depth, width, max_channels, c3k). See the module docstring for inputs
    and outputs."""

    num_classes: int  # K, background counted: the head predicts K - 1 classes
    depth: float = 0.5  # repeats of a stage: max(round(n * depth), 1) when n > 1
    width: float = 0.25  # channels: ceil(min(c, max_channels) * width / 8) * 8
    max_channels: int = 1024
    c3k: bool = False  # scales m, l, x of 11 / 26: every C3k2 stage uses C3k blocks
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    family: ClassVar[str] = "yolo"
    stages: ClassVar[tuple] = _V11_STAGES
    psa: ClassVar[bool] = True  # a C2PSA layer after the SPPF (11, 26)
    sppf_v26: ClassVar[bool] = False  # YOLO26's SPPF: linear cv1, residual
    legacy_head: ClassVar[bool] = False  # YOLOv8's 3x3 class towers
    reg_max: ClassVar[int] = 16
    end2end: ClassVar[bool] = False
    class_outputs: ClassVar[tuple[str, ...]] = _cls_tower_paths(23, False, False)
    strides: ClassVar[tuple[int, ...]] = STRIDES
    image_mean: ClassVar[tuple[float, ...]] = (0.0, 0.0, 0.0)
    image_std: ClassVar[tuple[float, ...]] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if not hasattr(self.num_classes, "__index__") or self.num_classes < 2:
            raise UserError(
                f"YOLO: num_classes counts the background and must be >= 2 (one class to "
                f"detect), got {self.num_classes!r}"
            )
        super().__post_init__()

    def channels(self, c: int) -> int:
        """A layer's width at this scale, the reference's rule (multiples of 8)."""
        return math.ceil(min(c, self.max_channels) * self.width / 8) * 8

    def repeats(self, n: int) -> int:
        """A stage's number of blocks at this scale (Python's round, as the reference)."""
        return max(round(n * self.depth), 1) if n > 1 else n

    def _stage(self, index: int, spec, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        c, n, kind, shortcut, expansion = spec
        if self.c3k and kind == "c3k2":
            kind = "c3k"
        return CSPStage(
            self.channels(c),
            self.repeats(n),
            kind,
            shortcut,
            expansion,
            self.dtype,
            name=f"model_{index}",
        )(x, train)

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float in [0, 1] → the outputs of the module docstring."""
        if images.shape[1] % 32 or images.shape[2] % 32:
            raise UserError(
                f"YOLO takes images whose sides are multiples of 32, got {images.shape[1:3]}"
            )
        conv = functools.partial(ConvNormAct, kernel=3, stride=2, dtype=self.dtype)
        stages = iter(self.stages)
        x = images.astype(self.dtype)
        x = conv(self.channels(64), name="model_0")(x, train)
        x = conv(self.channels(128), name="model_1")(x, train)
        x = self._stage(2, next(stages), x, train)
        x = conv(self.channels(256), name="model_3")(x, train)
        c3 = self._stage(4, next(stages), x, train)
        x = conv(self.channels(512), name="model_5")(c3, train)
        c4 = self._stage(6, next(stages), x, train)
        x = conv(self.channels(1024), name="model_7")(c4, train)
        x = self._stage(8, next(stages), x, train)
        c5 = SPPF(
            self.channels(1024),
            linear_first=self.sppf_v26,
            residual=self.sppf_v26,
            dtype=self.dtype,
            name="model_9",
        )(x, train)
        i = 10  # the next layer's index
        if self.psa:
            c5 = C2PSA(self.repeats(2), self.dtype, name="model_10")(c5, train)
            i = 11
        # Top-down (upsample, concatenate, stage: 3 layers each), then bottom-up.
        x = jnp.concatenate([_upsample2(c5), c4], axis=-1)
        n4 = self._stage(i + 2, next(stages), x, train)
        x = jnp.concatenate([_upsample2(n4), c3], axis=-1)
        p3 = self._stage(i + 5, next(stages), x, train)
        x = conv(self.channels(256), name=f"model_{i + 6}")(p3, train)
        p4 = self._stage(i + 8, next(stages), jnp.concatenate([x, n4], axis=-1), train)
        x = conv(self.channels(512), name=f"model_{i + 9}")(p4, train)
        p5 = self._stage(i + 11, next(stages), jnp.concatenate([x, c5], axis=-1), train)
        maps = [p3, p4, p5]

        outputs = DetectHead(
            self.num_classes - 1,
            self.reg_max,
            self.legacy_head,
            self.end2end,
            self.dtype,
            name=f"model_{i + 12}",
        )(maps, train)
        # With `features` the head still runs (XLA drops it), so init creates the same params.
        return maps if features else outputs


class YOLOv8(YOLO):
    """C2f stages, the plain SPPF, no attention, 3x3 class towers; reg_max 16."""

    stages: ClassVar[tuple] = _V8_STAGES
    psa: ClassVar[bool] = False
    legacy_head: ClassVar[bool] = True
    class_outputs: ClassVar[tuple[str, ...]] = _cls_tower_paths(22, True, False)


class YOLO11(YOLO):
    """C3k2 stages, SPPF then C2PSA, depthwise class towers; reg_max 16."""


class YOLO26(YOLO):
    """YOLO11's design with C3k blocks in the neck, an attention block in its last stage,
    YOLO26's SPPF, reg_max 1 and the end-to-end (one-to-one) branch."""

    stages: ClassVar[tuple] = _V26_STAGES
    sppf_v26: ClassVar[bool] = True
    reg_max: ClassVar[int] = 1
    end2end: ClassVar[bool] = True
    class_outputs: ClassVar[tuple[str, ...]] = _cls_tower_paths(23, False, True)


def anchor_points(
    feature_shapes: Sequence[tuple[int, int]], strides: Sequence[int] = STRIDES
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's anchor points (make_anchors) for this head's strides: every cell's
    centre, (x + 0.5, y + 0.5) in cells of its level, levels in order, positions row-major.

    feature_shapes: [(h_l, w_l)] → (points float32 [A, 2] (x, y) in cells, strides float32
    [A]); pixels are points * strides[:, None]. (jaxvision.ops.anchor_points, with YOLO's
    strides by default.)"""
    return ops_anchor_points(feature_shapes, strides)


def box_distances(boxes: jnp.ndarray) -> jnp.ndarray:
    """The box branch [..., 4 * reg_max] → distances (l, t, r, b) [..., 4] in cells: the
    expectation of each side's softmax over bins 0..reg_max-1 (DFL's integral), or the values
    themselves for reg_max 1."""
    reg_max = boxes.shape[-1] // 4
    if reg_max == 1:
        return boxes
    probs = jax.nn.softmax(boxes.reshape(*boxes.shape[:-1], 4, reg_max), axis=-1)
    return probs @ jnp.arange(reg_max, dtype=probs.dtype)


def decode_boxes(
    boxes: jnp.ndarray, points: jnp.ndarray, strides: jnp.ndarray, *, xywh: bool = False
) -> jnp.ndarray:
    """The box branch [B, A, 4 * reg_max] → boxes [B, A, 4] in input pixels, xyxy (or centre
    x, y, width, height with `xywh`, the reference's one-to-many inference format).

    points [A, 2], strides [A]: `anchor_points`. As the reference: distances and points in
    cells, the box scaled by the stride last."""
    ltrb = box_distances(boxes)
    top_left = points - ltrb[..., :2]
    bottom_right = points + ltrb[..., 2:]
    if xywh:
        out = jnp.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left], -1)
    else:
        out = jnp.concatenate([top_left, bottom_right], axis=-1)
    return out * strides[:, None]


def end_to_end_top(
    outputs: dict, points: jnp.ndarray, strides: jnp.ndarray, max_det: int = 300
) -> jnp.ndarray:
    """The end-to-end detections, the reference's (B, max_det, 6) output without NMS: rows
    [x1, y1, x2, y2, score, class] (pixels; class 0..K-2, the score channel, float), best first.

    outputs: the model's outputs (their "one2one" branch when present, else the head dict
    itself); points, strides: `anchor_points`. As the reference: the max_det anchors with the
    highest best-class score, then the max_det highest (anchor, class) scores among them, on
    sigmoid scores (equal float32 scores keep the lower index first)."""
    head = outputs.get("one2one", outputs)
    scores = jax.nn.sigmoid(head["cls_logits"])  # [B, A, C]
    boxes = decode_boxes(head["boxes"], points, strides)
    k = min(max_det, scores.shape[1])
    _, anchors = jax.lax.top_k(scores.max(axis=-1), k)  # [B, k]
    candidates = jnp.take_along_axis(scores, anchors[..., None], axis=1)  # [B, k, C]
    classes = scores.shape[-1]
    top, flat = jax.lax.top_k(candidates.reshape(candidates.shape[0], -1), k)
    chosen = jnp.take_along_axis(anchors, flat // classes, axis=1)
    picked = jnp.take_along_axis(boxes, chosen[..., None], axis=1)
    label = (flat % classes).astype(jnp.float32)
    return jnp.concatenate([picked, top[..., None], label[..., None]], axis=-1)
