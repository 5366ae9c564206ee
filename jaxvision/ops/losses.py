"""Detection losses, elementwise with torch's reductions: focal, smooth L1, L1, GIoU."""

import jax
import jax.numpy as jnp

from jaxvision.ops.boxes import _exact_product, box_area

REDUCTIONS = ("none", "sum", "mean")


def _reduce(loss: jax.Array, reduction: str) -> jax.Array:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean":
        # torch's mean of nothing is NaN; 0 is what a loss of no terms should be.
        return jnp.mean(loss) if loss.size else jnp.sum(loss)
    raise ValueError(f"unknown reduction {reduction!r}: use one of {', '.join(REDUCTIONS)}")


def sigmoid_focal_loss(
    logits: jax.Array,
    targets: jax.Array,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> jax.Array:
    """Focal loss (Lin et al. 2017), torchvision.ops.sigmoid_focal_loss.

    logits, targets: same shape, targets in {0, 1} (float) -> that shape for "none", else a
    scalar. Binary cross-entropy times (1 - p_t)^gamma, times alpha for positives and 1 - alpha
    for negatives; alpha = -1 leaves out that weight.
    """
    if not (0 <= alpha <= 1) and alpha != -1:
        raise ValueError(f"alpha must be in [0, 1] or -1 (no weighting), got {alpha}")
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets, logits.dtype)
    p = jax.nn.sigmoid(logits)
    # torch's binary_cross_entropy_with_logits: (1 - t) * x - log(sigmoid(x)).
    ce = (1 - targets) * logits - jax.nn.log_sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    # An integer gamma as an integer power: repeated products, as torch's `** 2`.
    power = int(gamma) if float(gamma).is_integer() else gamma
    loss = ce * (1 - p_t) ** power
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def smooth_l1(
    predictions: jax.Array, targets: jax.Array, beta: float = 1.0, reduction: str = "none"
) -> jax.Array:
    """torch's smooth_l1_loss (Huber divided by beta): 0.5 d^2 / beta where |d| < beta, else
    |d| - 0.5 beta; beta = 0 is L1. Default reduction "none" (torch's is "mean")."""
    diff = jnp.abs(predictions - targets)
    if beta == 0:
        return _reduce(diff, reduction)
    loss = jnp.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return _reduce(loss, reduction)


def l1(predictions: jax.Array, targets: jax.Array, reduction: str = "none") -> jax.Array:
    """|predictions - targets|, torch's l1_loss; default reduction "none"."""
    return _reduce(jnp.abs(predictions - targets), reduction)


def generalized_box_iou_loss(
    boxes1: jax.Array, boxes2: jax.Array, reduction: str = "none", eps: float = 1e-7
) -> jax.Array:
    """1 - GIoU of paired boxes, torchvision.ops.generalized_box_iou_loss.

    boxes1, boxes2: [..., 4] xyxy (paired, not pairwise) -> [...] for "none", else a scalar.
    eps keeps the divisions finite for degenerate boxes, as theirs.
    """
    boxes1 = jnp.asarray(boxes1, jnp.promote_types(jnp.asarray(boxes1).dtype, jnp.float32))
    boxes2 = jnp.asarray(boxes2, boxes1.dtype)
    x1, y1, x2, y2 = jnp.moveaxis(boxes1, -1, 0)
    x1g, y1g, x2g, y2g = jnp.moveaxis(boxes2, -1, 0)
    xi1, yi1 = jnp.maximum(x1, x1g), jnp.maximum(y1, y1g)
    xi2, yi2 = jnp.minimum(x2, x2g), jnp.minimum(y2, y2g)
    overlap = (yi2 > yi1) & (xi2 > xi1)
    inter = jnp.where(overlap, _exact_product(jnp.stack([xi2 - xi1, yi2 - yi1], -1)), 0)
    union = box_area(boxes1) + box_area(boxes2) - inter
    iou = inter / (union + eps)
    enclosing_sides = [jnp.maximum(x2, x2g) - jnp.minimum(x1, x1g)]
    enclosing_sides.append(jnp.maximum(y2, y2g) - jnp.minimum(y1, y1g))
    enclosing = _exact_product(jnp.stack(enclosing_sides, -1))
    giou = iou - (enclosing - union) / (enclosing + eps)
    return _reduce(1 - giou, reduction)
