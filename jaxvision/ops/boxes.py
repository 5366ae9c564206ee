"""Box arithmetic on fixed shapes, as torchvision.ops.boxes and det_utils.BoxCoder compute it.

Boxes are float `[..., 4]`, (x1, y1, x2, y2) in pixels unless a format says otherwise. Every
function broadcasts over leading axes, so one call serves a batch of images.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

FORMATS = ("xyxy", "xywh", "cxcywh")


def _to_xyxy(boxes: jax.Array, fmt: str) -> jax.Array:
    a, b, c, d = jnp.moveaxis(boxes, -1, 0)
    if fmt == "xywh":
        return jnp.stack([a, b, a + c, b + d], axis=-1)
    # cxcywh
    return jnp.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], axis=-1)


def _from_xyxy(boxes: jax.Array, fmt: str) -> jax.Array:
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
    if fmt == "xywh":
        return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    # cxcywh
    return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def box_convert(boxes: jax.Array, in_fmt: str, out_fmt: str) -> jax.Array:
    """boxes: [..., 4] in `in_fmt` -> [..., 4] in `out_fmt`; formats "xyxy", "xywh" (corner,
    width, height) and "cxcywh" (centre, width, height). Goes through xyxy as torchvision does,
    so xywh <-> cxcywh rounds as theirs."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in FORMATS:
            raise ValueError(f"unknown box format {fmt!r}: use one of {', '.join(FORMATS)}")
    boxes = jnp.asarray(boxes)
    if in_fmt == out_fmt:
        return boxes
    if in_fmt != "xyxy":
        boxes = _to_xyxy(boxes, in_fmt)
    if out_fmt != "xyxy":
        boxes = _from_xyxy(boxes, out_fmt)
    return boxes


def _exact_product(sides: jax.Array) -> jax.Array:
    """[..., 2] -> [...] sides[..., 0] * sides[..., 1], rounded before anything adds to it.

    Under jit XLA fuses `a * b + c` into one fused multiply-add, rounding once: IoUs then move
    by an ulp from torchvision's, and exact ties (a box inside two anchors of equal area, which
    is common) break towards another anchor. A reduction is not fused into its consumer that
    way, so its product is rounded as torch rounds it.
    """
    return jnp.prod(sides, axis=-1)


def box_area(boxes: jax.Array) -> jax.Array:
    """boxes: [..., 4] xyxy -> [...] (x2 - x1) * (y2 - y1); negative for inverted boxes, as in
    torchvision."""
    return _exact_product(boxes[..., 2:] - boxes[..., :2])


def _inter_union(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., N, 4] x [..., M, 4] -> intersection and union areas, both [..., N, M]."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = jnp.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = jnp.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    inter = _exact_product(jnp.maximum(rb - lt, 0))
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter, union


def _safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """numerator / denominator, and 0 where the denominator is 0 (with finite gradients)."""
    zero = denominator == 0
    return jnp.where(zero, 0, numerator / jnp.where(zero, 1, denominator))


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise intersection over union: boxes1 [..., N, 4], boxes2 [..., M, 4] xyxy (leading
    axes broadcast) -> [..., N, M].

    Computed as torchvision computes it (inter / (area1 + area2 - inter)), except that where
    the union is 0 (two zero-area boxes) the IoU is 0 where torchvision gives NaN (0 / 0): such
    a pair neither matches nor suppresses, in either library.
    """
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_divide(inter, union)


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise generalised IoU (Rezatofighi et al. 2019): boxes1 [..., N, 4], boxes2 [..., M,
    4] xyxy -> [..., N, M], IoU - (enclosing area - union) / enclosing area, in [-1, 1].

    Where torchvision divides by 0 this gives 0 for that term, on purpose: the IoU is 0 where
    the union is 0 (torchvision: NaN), and the penalty is 0 where the enclosing box has no area.
    Degenerate boxes give NaN there in torchvision; inverted boxes (x2 < x1 or y2 < y1, whose
    areas are negative) can have a zero enclosing area and a non-zero union, where torchvision
    gives -inf or inf and this the IoU alone: 0 or -0.0 (0 over a negative union), e.g. for
    [2, 0, 0, 2] with itself, -inf there and -0.0 here. So GIoU here is always finite, in
    [-1, 1]; `losses.generalized_box_iou_loss` (eps in the divisions) equals torchvision's.
    """
    inter, union = _inter_union(boxes1, boxes2)
    iou = _safe_divide(inter, union)
    lt = jnp.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = jnp.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    enclosing = _exact_product(jnp.maximum(rb - lt, 0))
    return iou - _safe_divide(enclosing - union, enclosing)


def clip_boxes(boxes: jax.Array, size) -> jax.Array:
    """Clamps x to [0, w] and y to [0, h], as torchvision's clip_boxes_to_image.

    boxes: [B, ..., 4] xyxy; size: (h, w) for all boxes, or [B, 2] (h, w) per image (any
    leading shape that is a prefix of boxes' leading shape).
    """
    boxes = jnp.asarray(boxes)
    size = jnp.asarray(size).astype(boxes.dtype)
    extra = boxes.ndim - 1 - (size.ndim - 1)
    limits = size.reshape(size.shape[:-1] + (1,) * extra + (2,))
    height, width = limits[..., 0], limits[..., 1]
    x = jnp.clip(boxes[..., 0::2], 0, width[..., None])
    y = jnp.clip(boxes[..., 1::2], 0, height[..., None])
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def remove_small_boxes_mask(boxes: jax.Array, min_size: float) -> jax.Array:
    """boxes: [..., 4] xyxy -> [...] bool, True where both sides are >= min_size: the boxes
    torchvision's remove_small_boxes keeps, as a mask instead of indices."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return (widths >= min_size) & (heights >= min_size)


@dataclasses.dataclass(frozen=True)
class BoxCoder:
    """Box regression targets relative to reference boxes (anchors), torchvision's
    det_utils.BoxCoder: (dx, dy, dw, dh) = weights * (centre offset / size, log size ratio).

    weights: (wx, wy, ww, wh), e.g. (1, 1, 1, 1) for RetinaNet, (10, 10, 5, 5) for SSD.
    bbox_xform_clip: decode clamps dw and dh (after dividing by the weights) to at most this,
    so exp() cannot overflow: at most a 1000/16 size ratio.
    """

    weights: tuple[float, float, float, float]
    bbox_xform_clip: float = math.log(1000.0 / 16)

    def encode(self, reference_boxes: jax.Array, proposals: jax.Array) -> jax.Array:
        """Codes that move `proposals` (anchors) onto `reference_boxes` (ground truth).

        reference_boxes, proposals: [..., 4] xyxy (broadcast) -> [..., 4] (dx, dy, dw, dh), in
        reference_boxes' dtype as torchvision. Zero-width proposals give inf/NaN, as theirs.
        """
        wx, wy, ww, wh = self.weights
        dtype = jnp.result_type(reference_boxes, proposals)
        reference_boxes = jnp.asarray(reference_boxes, dtype)
        proposals = jnp.asarray(proposals, dtype)
        ex_widths = proposals[..., 2] - proposals[..., 0]
        ex_heights = proposals[..., 3] - proposals[..., 1]
        ex_ctr_x = proposals[..., 0] + 0.5 * ex_widths
        ex_ctr_y = proposals[..., 1] + 0.5 * ex_heights
        gt_widths = reference_boxes[..., 2] - reference_boxes[..., 0]
        gt_heights = reference_boxes[..., 3] - reference_boxes[..., 1]
        gt_ctr_x = reference_boxes[..., 0] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[..., 1] + 0.5 * gt_heights
        # Same order of operations as torchvision's encode_boxes, so the rounding matches.
        dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths
        dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights
        dw = ww * jnp.log(gt_widths / ex_widths)
        dh = wh * jnp.log(gt_heights / ex_heights)
        return jnp.stack([dx, dy, dw, dh], axis=-1)

    def decode(self, rel_codes: jax.Array, boxes: jax.Array) -> jax.Array:
        """Boxes that `rel_codes` make of the reference `boxes` (anchors).

        rel_codes: [..., 4] (dx, dy, dw, dh); boxes: [..., 4] xyxy (broadcast), cast to
        rel_codes' dtype as torchvision does -> [..., 4] xyxy.
        """
        rel_codes = jnp.asarray(rel_codes)
        boxes = jnp.asarray(boxes).astype(rel_codes.dtype)
        wx, wy, ww, wh = self.weights
        widths = boxes[..., 2] - boxes[..., 0]
        heights = boxes[..., 3] - boxes[..., 1]
        ctr_x = boxes[..., 0] + 0.5 * widths
        ctr_y = boxes[..., 1] + 0.5 * heights
        dx = rel_codes[..., 0] / wx
        dy = rel_codes[..., 1] / wy
        dw = jnp.minimum(rel_codes[..., 2] / ww, self.bbox_xform_clip)
        dh = jnp.minimum(rel_codes[..., 3] / wh, self.bbox_xform_clip)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (jnp.exp(dw) * widths)
        half_h = 0.5 * (jnp.exp(dh) * heights)
        return jnp.stack(
            [pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h],
            axis=-1,
        )


def complete_box_iou(boxes1: jax.Array, boxes2: jax.Array, eps: float = 1e-7) -> jax.Array:
    """Complete IoU (Zheng et al. 2020) of paired boxes, as the YOLO reference computes it:
    boxes1, boxes2 [..., 4] xyxy (paired, not pairwise; leading axes broadcast) -> [...].

    IoU - (centre distance^2 / enclosing diagonal^2 + v * a), where v = 4 / pi^2 (atan(w2 /
    h2) - atan(w1 / h1))^2 measures the aspect mismatch and a = v / (1 - IoU + v + eps) is
    held constant for the gradient (the reference computes it under no_grad). eps sits where
    the reference puts it: added to both heights, the union and the squared diagonal, so
    degenerate boxes stay finite. In [-1.5, 1]; boxes1 and boxes2 are not interchangeable to
    the last bit, so pass them in the reference's order.
    """
    x1a, y1a, x2a, y2a = jnp.moveaxis(boxes1, -1, 0)
    x1b, y1b, x2b, y2b = jnp.moveaxis(boxes2, -1, 0)
    w1, h1 = x2a - x1a, y2a - y1a + eps
    w2, h2 = x2b - x1b, y2b - y1b + eps
    inter = jnp.maximum(jnp.minimum(x2a, x2b) - jnp.maximum(x1a, x1b), 0) * jnp.maximum(
        jnp.minimum(y2a, y2b) - jnp.maximum(y1a, y1b), 0
    )
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    enclosing_w = jnp.maximum(x2a, x2b) - jnp.minimum(x1a, x1b)
    enclosing_h = jnp.maximum(y2a, y2b) - jnp.minimum(y1a, y1b)
    diagonal2 = enclosing_w**2 + enclosing_h**2 + eps
    centre2 = ((x1b + x2b - x1a - x2a) ** 2 + (y1b + y2b - y1a - y2a) ** 2) / 4
    v = (4 / math.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    a = jax.lax.stop_gradient(v / (1 - iou + v + eps))
    return iou - (centre2 / diagonal2 + v * a)
