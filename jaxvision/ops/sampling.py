"""Balanced positive / negative sampling on fixed shapes: torchvision's
det_utils.BalancedPositiveNegativeSampler, as masks instead of index lists.

Two-stage detectors train each stage on a sample of its candidates (the RPN on 256 anchors per
image, half of them positive at most; the RoI heads on 512 proposals, a quarter positive). The
sample is uniform among the positives and among the negatives, as torchvision's randperm picks
it; the random stream differs from torch's, so the same key does not give torch's sample.
"""

import jax
import jax.numpy as jnp


def _random_subset(key: jax.Array, candidates: jax.Array, count: jax.Array, limit: int):
    """[N] bool: `count` (<= `limit`, static) of the True entries of `candidates` [N],
    uniformly at random: those of lowest random priority."""
    priority = jnp.where(candidates, jax.random.uniform(key, candidates.shape), 2.0)
    # The `limit` lowest priorities in ascending order (top_k keeps the lower index first on
    # ties, as a stable sort would), of which the first `count` are taken: a partial sort of
    # `limit` instead of a full sort of N, the same subset.
    _, order = jax.lax.top_k(-priority, min(limit, candidates.shape[0]))
    taken = jnp.zeros(candidates.shape, bool).at[order].set(jnp.arange(order.shape[0]) < count)
    return candidates & taken


def balanced_sample(
    key: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jax.Array, jax.Array]:
    """One image's sample: at most int(num_samples * positive_fraction) positives, and
    negatives to fill num_samples (fewer where there are fewer).

    positive, negative: [N] bool (disjoint; neither: ignored). Returns (sampled positives,
    sampled negatives), [N] bool each. vmap it for a batch (one key per image).
    """
    pos_key, neg_key = jax.random.split(key)
    max_pos = int(num_samples * positive_fraction)
    num_pos = jnp.minimum(max_pos, jnp.sum(positive))
    num_neg = jnp.minimum(num_samples - num_pos, jnp.sum(negative))
    return (
        _random_subset(pos_key, positive, num_pos, max_pos),
        _random_subset(neg_key, negative, num_neg, num_samples),
    )


def compact(mask: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The True positions of `mask` [N] in index order, padded to `size` (static): (indices
    int32 [size], valid [size] bool); padding rows point at index 0. What torchvision's
    `torch.where(mask)[0]` gives, on a fixed shape."""
    (indices,) = jnp.nonzero(mask, size=size, fill_value=0)
    valid = jnp.arange(size) < jnp.sum(mask)
    return indices.astype(jnp.int32), valid
