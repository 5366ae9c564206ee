"""Tests of an explanation, as the field uses them to tell a real one from an edge detector.

- `deletion_curve`: hide the most-attributed pixels first and watch the class probability;
  a faithful map makes it fall faster than hiding pixels in random order (lower area).
- `cascading_randomization` (Adebayo et al. 2018): re-initialise the model's top-level
  modules from the output down, one more each step, and compare each map with the trained
  model's (Spearman rank correlation): a map that explains the model must change as its
  weights go; one that only shows the image's edges does not.
- `pointing_game` (Zhang et al. 2016): where the object's place is known, does the heat map's
  maximum fall inside its box?
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxvision.explain.core import ModelFunction


def deletion_curve(
    fn: ModelFunction, x, targets, heatmaps: np.ndarray, steps: int = 16, fill=None
) -> dict:
    """Probabilities [N, steps + 1] of each target as the top 0, 1/steps, ..., all pixels of
    its heat map [N, S, S] are removed, and their area under the curve [N] (the mean over the
    points; lower: more faithful). A removed pixel takes `fill` (in x's space; default black,
    as Petsiuk et al. 2018 delete)."""
    if fill is None:
        fill = fn.normalize(jnp.zeros(x.shape[-1]))
    n, side = heatmaps.shape[0], heatmaps.shape[1]
    order = np.argsort(-heatmaps.reshape(n, -1), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(side * side)[None], axis=1)
    ranks = jnp.asarray(ranks.reshape(n, side, side))
    counts = jnp.round(jnp.linspace(0, side * side, steps + 1)).astype(jnp.int32)

    def run(fn, x, targets, ranks):
        def at(count):
            hidden = (ranks < count)[..., None]
            probs = jax.nn.softmax(fn.logits(jnp.where(hidden, fill, x)))
            return jnp.take_along_axis(probs, targets[:, None], -1)[:, 0]

        return jax.lax.map(at, counts).T  # [N, steps + 1]

    probs = np.asarray(fn.jit(run)(x, jnp.asarray(targets), ranks))
    return {"probabilities": probs, "auc": probs.mean(axis=1)}


def random_heatmaps(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Heat maps that rank pixels at random: the deletion curve's reference."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image, the Spearman rank correlation of two heat maps [N, ...] ([N])."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    out = []
    for u, v in zip(a, b, strict=True):
        if np.ptp(u) == 0 or np.ptp(v) == 0:  # a constant map ranks nothing
            out.append(0.0)
        else:
            out.append(stats.spearmanr(u, v).statistic)
    return np.asarray(out, np.float32)


def cascading_randomization(
    fn: ModelFunction, heatmap_of, seed: int = 1, limit: int | None = None
) -> list[dict]:
    """[{"randomized": top-level modules re-initialised so far (output first), "spearman":
    mean rank correlation with the trained model's maps}], one entry per module, first the
    trained model itself (1.0). heatmap_of(fn) -> [N, S, S] heat maps of a ModelFunction.

    The modules are the model's top-level parameter groups in reverse order of creation
    (creation follows the forward pass): the classifier first, the stem last. Fresh weights
    come from the model's own initialiser with another seed; other collections (BatchNorm
    statistics) are kept. `limit`: stop after that many modules.
    """
    params = fn.variables["params"]
    size, channels = fn.image_size, fn.channels
    fresh = fn.model.init(jax.random.key(seed), jnp.zeros((1, size, size, channels)))["params"]
    reference = heatmap_of(fn)
    curve = [{"randomized": [], "spearman": 1.0}]
    current = dict(params)
    done = []
    # A fresh init lists the modules in creation order (a restored checkpoint sorts them).
    for name in list(reversed(list(fresh)))[:limit]:
        current[name] = fresh[name]
        done.append(name)
        maps = heatmap_of(fn.with_variables({**fn.variables, "params": dict(current)}))
        similarity = float(spearman(reference, maps).mean())
        curve.append({"randomized": list(done), "spearman": similarity})
    return curve


def pointing_game(heatmaps: np.ndarray, boxes: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Per image, whether its heat map's maximum falls inside the object's box ([N] float in
    [0, 1]); a method's pointing-game score is the mean. Zhang et al.'s hit counts the maximum
    within 15 pixels of the box; here it must be inside.

    heatmaps: [N, H, W], any scale. boxes: [N, 4], one box per image, or N arrays [k, 4], a hit
    inside any of them; xyxy in the heat map's pixel edges (pixel (r, c) spans [c, c + 1] x
    [r, r + 1] and is inside a box when its centre is: x1 <= c + 0.5 <= x2, likewise y).

    Ties: where several pixels share the maximum, the share of them inside a box (the expected
    hit of pointing at one of them at random); a constant map thus scores the boxes' share of
    the image, as pointing at random does, never a free hit.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3:
        raise ValueError(f"heat maps must be [N, H, W], got shape {heatmaps.shape}")
    if len(boxes) != len(heatmaps):
        raise ValueError(f"{len(boxes)} boxes for {len(heatmaps)} heat maps: give one per image")
    rows, cols = heatmaps.shape[1:]
    centre_y = np.arange(rows)[:, None] + 0.5
    centre_x = np.arange(cols)[None, :] + 0.5
    hits = np.empty(len(heatmaps), np.float64)
    for i, (heatmap, image_boxes) in enumerate(zip(heatmaps, boxes, strict=True)):
        if not np.isfinite(heatmap).all():
            raise ValueError(f"heat map {i} has non-finite values")
        top = heatmap == heatmap.max()
        inside = np.zeros_like(top)
        for x1, y1, x2, y2 in np.asarray(image_boxes, np.float64).reshape(-1, 4):
            inside |= (x1 <= centre_x) & (centre_x <= x2) & (y1 <= centre_y) & (centre_y <= y2)
        hits[i] = np.count_nonzero(top & inside) / np.count_nonzero(top)
    return hits
