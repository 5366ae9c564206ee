"""Non-maximum suppression on fixed shapes: jittable, vmappable, and without an N x N matrix.

Greedy NMS as torchvision.ops.nms: visit the boxes by descending score; keep a box unless a
kept box of higher score overlaps it with IoU > iou_threshold. The kept set is torchvision's
(its first `max_output` boxes), and the order is theirs.

Ties: boxes of equal score are visited in index order (a stable sort), which is what
torchvision's CPU kernel does; its CUDA kernel sorts unstably, so there the box kept among
equal-score overlapping boxes may differ. NaN scores come first (in index order), as in
torchvision's descending sort: such boxes are kept and suppress as any other.

The threshold: torchvision computes each IoU in the boxes' dtype and compares it with the
threshold as a double (C++ promotes the float IoU). A float threshold such as 0.6 is not a
float32, and an IoU equal to float32(0.6) (3/5 of integer areas, say) is above 0.6 exactly when
float32(0.6) rounded up. So a Python (or concrete) threshold is compared as torchvision does:
`iou >= t` where the IoU dtype's nearest value t to the threshold lies above it, else `iou > t`,
which is the double comparison without leaving the IoU's dtype. A traced threshold has already
been rounded to the IoU's dtype; it is compared as it is (`iou > threshold`).

How: boxes are sorted once, then handled in tiles of `tile_size`. Each tile is first suppressed
by the boxes kept so far (compared a tile-sized chunk at a time), then resolved within itself
by iterating "alive = not suppressed by an earlier alive box of the tile" to its fixed point,
which is the greedy answer (entry j depends only on entries before it, so the fixed point is
unique and t iterations settle the first t entries; a few are usually enough). Memory is a few
tile x tile matrices; work is about N x (boxes kept), as the sequential algorithm. The loop
stops once `max_output` boxes are kept or only invalid boxes are left.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops.boxes import box_iou


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
    *,
    tile_size: int = 256,
) -> tuple[jax.Array, jax.Array]:
    """Greedy non-maximum suppression of one image's boxes.

    boxes: [N, 4] xyxy; scores: [N]; valid: [N] bool or None (all valid): invalid boxes are
    never kept and never suppress. iou_threshold: a box is dropped if its IoU with a kept box
    of higher score is > this. max_output (static): how many indices to return.

    Returns (indices int32 [max_output], kept bool [max_output]): the kept boxes' indices into
    `boxes`, by descending score (equal scores: lower index first), then padding rows (index 0,
    kept False). vmap it for a batch.
    """
    return _nms(boxes, scores, None, iou_threshold, max_output, valid, tile_size)


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    iou_threshold: float,
    max_output: int,
    valid: jax.Array | None = None,
    *,
    tile_size: int = 256,
) -> tuple[jax.Array, jax.Array]:
    """Class-aware NMS, torchvision.ops.batched_nms: boxes only suppress boxes of their class.

    classes: [N] int; the rest as `nms`. Compares classes directly instead of torchvision's
    trick of offsetting each class's boxes, so large offsets cost no float precision; the kept
    set is that of NMS run per class, which is what their trick and their per-class loop both
    compute.
    """
    return _nms(boxes, scores, classes, iou_threshold, max_output, valid, tile_size)


def select_detections(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    valid: jax.Array,
    iou_threshold: float,
    max_detections: int,
) -> dict:
    """One image's detections from candidates: class-aware NMS, the best `max_detections`.

    boxes: [C, 4]; scores: [C]; classes: [C] int; valid: [C] bool (candidates to consider).
    Returns {"boxes": [D, 4], "scores": [D], "classes": [D] int32, "valid": [D] bool}, kept
    rows first by descending score, the rest zero; D = max_detections.
    """
    keep, kept = batched_nms(boxes, scores, classes, iou_threshold, max_detections, valid)
    return {
        "boxes": jnp.where(kept[:, None], boxes[keep], 0),
        "scores": jnp.where(kept, scores[keep], 0),
        "classes": jnp.where(kept, classes[keep], 0).astype(jnp.int32),
        "valid": kept,
    }


def above_threshold(iou: jax.Array, threshold) -> jax.Array:
    """iou > threshold as torchvision's NMS kernel decides it: the IoU (float32, say) against
    the threshold as a double, without computing in double. threshold: a Python number or a
    concrete array (then exact), or a traced value (then already in the IoU's dtype, compared
    as it is)."""
    if isinstance(threshold, jax.core.Tracer):
        return iou > threshold
    exact = float(np.asarray(threshold, np.float64))
    rounded = np.asarray(exact, iou.dtype)  # the nearest value of the IoU's dtype
    # Between the threshold and a rounded-up neighbour there is no value of that dtype, so
    # "above the threshold" is "at least the neighbour"; a rounded-down (or equal) one is
    # exceeded exactly when the threshold is.
    if float(rounded) > exact:
        return iou >= rounded
    return iou > rounded


def _nms(boxes, scores, classes, iou_threshold, max_output, valid, tile_size):
    n = boxes.shape[0]
    if max_output <= 0 or n == 0:
        return jnp.zeros((max(max_output, 0),), jnp.int32), jnp.zeros((max(max_output, 0),), bool)
    if valid is None:
        valid = jnp.ones((n,), bool)
    valid = jnp.asarray(valid, bool)
    # Valid boxes first, each group NaN scores first, then by descending score; lexsort is
    # stable, so ties keep index order (torchvision's CPU kernel sorts stably too).
    order = jnp.lexsort((-scores, ~jnp.isnan(scores), ~valid)).astype(jnp.int32)
    num_valid = jnp.sum(valid, dtype=jnp.int32)

    tile = min(tile_size, n)
    num_tiles = -(-n // tile)
    pad = num_tiles * tile - n
    sorted_boxes = jnp.pad(boxes[order], ((0, pad), (0, 0)))
    sorted_classes = None if classes is None else jnp.pad(classes[order], (0, pad))
    capacity = -(-max_output // tile) * tile  # the kept buffer, in whole tiles
    arange = jnp.arange(tile, dtype=jnp.int32)

    def overlaps(boxes_a, classes_a, boxes_b, classes_b):
        """[T, T] bool: pair (a, b) overlaps beyond the threshold (within one class)."""
        hits = above_threshold(box_iou(boxes_a, boxes_b), iou_threshold)
        if classes_a is not None:
            hits &= classes_a[:, None] == classes_b[None, :]
        return hits

    def slice_rows(x, start):
        if x is None:
            return None
        return jax.lax.dynamic_slice_in_dim(x, start, tile, axis=0)

    def suppress_by_kept(state, tile_boxes, tile_classes, alive):
        kept_boxes, kept_classes, count = state

        def body(chunk, alive):
            start = chunk * tile
            kept = (start + arange) < count
            hits = overlaps(
                slice_rows(kept_boxes, start),
                slice_rows(kept_classes, start),
                tile_boxes,
                tile_classes,
            )
            return alive & ~jnp.any(hits & kept[:, None], axis=0)

        return jax.lax.fori_loop(0, (count + tile - 1) // tile, body, alive)

    def resolve_tile(tile_boxes, tile_classes, alive):
        # hits[a, b]: earlier box a would suppress box b.
        hits = overlaps(tile_boxes, tile_classes, tile_boxes, tile_classes)
        hits &= arange[:, None] < arange[None, :]

        def step(carry):
            keep, _ = carry
            new = alive & ~jnp.any(hits & keep[:, None], axis=0)
            return new, jnp.any(new != keep)

        keep, _ = jax.lax.while_loop(lambda c: c[1], step, (alive, jnp.array(True)))
        return keep

    def cond(carry):
        t, count = carry[0], carry[3]
        return (t < num_tiles) & (count < max_output) & (t * tile < num_valid)

    def body(carry):
        t, kept_boxes, kept_classes, count, kept_pos = carry
        start = t * tile
        tile_boxes = slice_rows(sorted_boxes, start)
        tile_classes = slice_rows(sorted_classes, start)
        alive = (start + arange) < num_valid
        alive = suppress_by_kept((kept_boxes, kept_classes, count), tile_boxes, tile_classes, alive)
        keep = resolve_tile(tile_boxes, tile_classes, alive)
        # Append the tile's kept boxes, in order, to the buffer (beyond capacity: dropped).
        slots = jnp.where(keep, count + jnp.cumsum(keep) - 1, capacity)
        kept_boxes = kept_boxes.at[slots].set(tile_boxes, mode="drop")
        if kept_classes is not None:
            kept_classes = kept_classes.at[slots].set(tile_classes, mode="drop")
        kept_pos = kept_pos.at[slots].set(start + arange, mode="drop")
        count = jnp.minimum(count + jnp.sum(keep, dtype=jnp.int32), max_output)
        return t + 1, kept_boxes, kept_classes, count, kept_pos

    init = (
        jnp.int32(0),
        jnp.zeros((capacity, 4), boxes.dtype),
        None if classes is None else jnp.zeros((capacity,), sorted_classes.dtype),
        jnp.int32(0),
        jnp.zeros((capacity,), jnp.int32),
    )
    _, _, _, count, kept_pos = jax.lax.while_loop(cond, body, init)
    kept = jnp.arange(max_output) < count
    indices = jnp.where(kept, order[kept_pos[:max_output]], 0)
    return indices.astype(jnp.int32), kept
