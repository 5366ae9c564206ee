"""Model ensembles and weight averaging ("model soups"), on plain variable trees.

A member is a variable tree such as `{"params": ..., "batch_stats": ...}` of arrays, and a
model is `apply_fn(variables, images) -> logits [B, K]` (e.g. `lambda v, x: model.apply(v, x,
train=False)`), so nothing here depends on a train-state class.

- Ensembles average the members' predictions: `stack` the members, run them all in one
  vmapped forward with `member_probs`, then `ensemble_probs`; `expected_calibration_error`
  measures how well the confidences match the accuracy (ensembles usually lower it).
- Soups average the members' weights into one model of the same cost as a member
  (Wortsman et al. 2022, "Model soups"): `uniform_soup` averages them all, `greedy_soup` keeps
  a member only if it does not make a held-out score worse. Averaging only makes sense for
  members fine-tuned from the same pretrained weights.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _path_name(path) -> str:
    """A key path as "params/fc/kernel"."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        else:
            parts.append(str(key))
    return "/".join(parts)


def _check_same_architecture(trees: Sequence) -> None:
    """Raises ValueError naming the first path where a member differs from member 0 (its
    presence, shape or dtype)."""
    if not trees:
        raise ValueError("need at least one member")
    first, first_def = jax.tree_util.tree_flatten_with_path(trees[0])
    first_leaves = {_path_name(path): leaf for path, leaf in first}
    for i, tree in enumerate(trees[1:], start=1):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        named = {_path_name(path): leaf for path, leaf in leaves}
        for name in first_leaves:
            if name not in named:
                raise ValueError(
                    f"members have different architectures: {name} is in member 0 "
                    f"but not in member {i}"
                )
        for name in named:
            if name not in first_leaves:
                raise ValueError(
                    f"members have different architectures: {name} is in member {i} "
                    f"but not in member 0"
                )
        if treedef != first_def:
            raise ValueError(
                f"members have different tree structures: {first_def} in member 0 "
                f"and {treedef} in member {i}"
            )
        for name, leaf in first_leaves.items():
            shape, other_shape = np.shape(leaf), np.shape(named[name])
            if shape != other_shape:
                raise ValueError(
                    f"members have different architectures: {name} is {shape} in member 0 "
                    f"and {other_shape} in member {i}"
                )
            dtype, other_dtype = jnp.result_type(leaf), jnp.result_type(named[name])
            if dtype != other_dtype:
                raise ValueError(
                    f"members have different dtypes: {name} is {dtype} in member 0 "
                    f"and {other_dtype} in member {i}"
                )


def stack(trees: Sequence):
    """M variable trees of one architecture -> one tree whose leaves have a leading member axis.

    trees: M trees with the same structure, shapes and dtypes (leaf [...] in each) -> a tree of
    the same structure with leaves [M, ...]. Raises ValueError naming the first differing path
    otherwise.
    """
    _check_same_architecture(trees)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member_probs(apply_fn: Callable, stacked_variables, images: jax.Array) -> jax.Array:
    """Every member's softmax probabilities in one vmapped forward: [M, B, K] float32.

    apply_fn: (variables, images) -> logits [B, K], in evaluation mode (BatchNorm uses its
    running statistics). stacked_variables: `stack(members)`, leaves [M, ...]. images:
    [B, ...], the same batch for every member. Jittable with `apply_fn` closed over or static;
    memory grows with M, so split large ensembles or batches on the caller's side.
    """

    def probs(variables):
        logits = apply_fn(variables, images)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

    return jax.vmap(probs)(stacked_variables)


def ensemble_probs(probs: jax.Array) -> jax.Array:
    """probs: [M, B, K] the members' probabilities -> [B, K] their mean (the ensemble)."""
    return jnp.mean(probs, axis=0)


def expected_calibration_error(probs, labels, num_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017), in numpy on the host.

    probs: [N, K] class probabilities, labels: [N] int in [0, K). The top-label confidences
    fall in `num_bins` equal-width bins (lo, hi] of (0, 1]; ECE is the sum over the bins of
    |accuracy - mean confidence| * n_bin / N. 0 is perfect calibration, 1 the worst.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or probs.shape[0] == 0:
        raise ValueError(
            f"need probs [N, K] and labels [N] with N > 0, got {probs.shape} and {labels.shape}"
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    confidences = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.arange(num_bins + 1) / num_bins  # exactly k / num_bins, unlike linspace
    # searchsorted(side="left") finds i with edges[i-1] < c <= edges[i]: bin i-1 is (lo, hi].
    # A confidence of exactly 0 (impossible for probabilities) joins the first bin.
    bins = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, num_bins - 1)
    confidence_sums = np.bincount(bins, weights=confidences, minlength=num_bins)
    correct_sums = np.bincount(bins, weights=correct, minlength=num_bins)
    # |acc - conf| * n_bin / N == |correct_sum - confidence_sum| / N; empty bins add 0.
    return float(np.abs(correct_sums - confidence_sums).sum() / len(labels))


def uniform_soup(trees: Sequence):
    """The elementwise mean of M members' weights: a tree like one member.

    trees: M trees of one architecture. Floating leaves are averaged in float32 and keep their
    dtype (a bfloat16 member gives a bfloat16 soup). Other leaves (integer counters, flags)
    must be equal in every member and are kept; a difference raises ValueError.
    """
    _check_same_architecture(trees)

    def average(path, *leaves):
        if jnp.issubdtype(jnp.result_type(leaves[0]), jnp.floating):
            total = sum(jnp.asarray(leaf, jnp.float32) for leaf in leaves)
            return (total / len(leaves)).astype(jnp.result_type(leaves[0]))
        for i, leaf in enumerate(leaves[1:], start=1):
            if not np.array_equal(np.asarray(leaves[0]), np.asarray(leaf)):
                raise ValueError(
                    f"cannot average {_path_name(path)}: it is not floating point "
                    f"({jnp.result_type(leaf)}) and differs between member 0 and member {i}"
                )
        return leaves[0]

    return jax.tree_util.tree_map_with_path(average, *trees)


def greedy_soup(
    trees: Sequence, score_fn: Callable, *, order: Sequence[int] | None = None
) -> tuple[object, list[int]]:
    """Greedy soup (Wortsman et al. 2022): add members best first, keep those that do not hurt.

    trees: M members of one architecture. score_fn: tree -> float, a held-out score where
    higher is better (e.g. validation accuracy, not the test set). order: the member indices
    to try, best first; by default all members sorted by their own score, descending (ties keep
    the original order), which costs M calls of `score_fn` more. The soup starts as the first
    member; each next member joins when the uniform soup of the chosen members plus it scores
    >= the current soup.

    Returns (the uniform soup of the chosen members, their indices in the order they joined).
    """
    _check_same_architecture(trees)
    if order is None:
        scores = [float(score_fn(tree)) for tree in trees]
        order = sorted(range(len(trees)), key=lambda i: -scores[i])
        best_score = scores[order[0]]
    else:
        order = [int(i) for i in order]
        if not order or len(set(order)) != len(order) or not set(order) <= set(range(len(trees))):
            raise ValueError(f"order must list distinct member indices in [0, {len(trees)})")
        best_score = float(score_fn(trees[order[0]]))
    chosen = [order[0]]
    soup, soup_score = uniform_soup([trees[order[0]]]), best_score
    for i in order[1:]:
        candidate = uniform_soup([trees[j] for j in [*chosen, i]])
        candidate_score = float(score_fn(candidate))
        if candidate_score >= soup_score:
            chosen.append(i)
            soup, soup_score = candidate, candidate_score
    return soup, chosen
