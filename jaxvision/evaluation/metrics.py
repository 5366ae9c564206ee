"""Per-class metrics: confusion matrices and precision / recall / F1 per class.

Counting happens where the predictions are: `confusion_counts` inside the jitted eval step (a
[K, K] sum per batch, which adds up over batches like the other eval sums), the rest on the
host in numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np


def confusion_counts(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int
) -> jax.Array:
    """Jittable confusion counts of one batch: [K, K] int32, rows true class, columns predicted.

    logits: [B, K] float, labels: [B] int, mask: [B] bool (padded examples, False, count nowhere).
    """
    preds = jnp.argmax(logits, axis=-1)
    cells = labels.astype(jnp.int32) * num_classes + preds.astype(jnp.int32)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[cells].add(mask.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """labels, preds: [N] int in [0, K) -> [K, K] int64, rows true class, columns predicted."""
    labels = np.asarray(labels, np.int64).reshape(-1)
    preds = np.asarray(preds, np.int64).reshape(-1)
    if labels.shape != preds.shape:
        raise ValueError(f"{labels.shape[0]} labels but {preds.shape[0]} predictions")
    for name, x in (("label", labels), ("prediction", preds)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"a {name} lies outside [0, {num_classes})")
    cells = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


class ConfusionAccumulator:
    """Adds up confusion counts over an eval pass on the host, in int64 (no int32 overflow).

    acc = ConfusionAccumulator(num_classes)
    for batch in batches:
        acc.add_counts(eval_step(state, batch)["confusion"])  # from `confusion_counts`
    report = per_class_report(acc.confusion)
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def add_counts(self, counts) -> None:
        """counts: [K, K] int (a device array is fetched), e.g. from `confusion_counts`."""
        counts = np.asarray(jax.device_get(counts), np.int64)
        if counts.shape != self.confusion.shape:
            raise ValueError(f"counts of shape {counts.shape}, expected {self.confusion.shape}")
        self.confusion += counts

    def add(self, labels, preds) -> None:
        """labels, preds: [N] int, as `confusion_matrix`."""
        self.confusion += confusion_matrix(labels, preds, self.num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # sklearn's zero_division=0: a ratio with nothing to count is 0.
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den > 0)


def per_class_report(confusion: np.ndarray) -> dict:
    """confusion: [K, K] int, rows true class, columns predicted ->
    {"precision", "recall", "f1": [K] float64, "support": [K] int64 (true examples per class),
    "macro_precision", "macro_recall", "macro_f1", "accuracy": float}.

    Equal to sklearn's `precision_recall_fscore_support(..., labels=range(K), zero_division=0)`:
    a class never predicted has precision 0, one never seen recall 0. Macro averages weigh every
    one of the K classes equally, absent ones included.
    """
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    # 2 tp / (2 tp + fp + fn) is 2 P R / (P + R) where both are defined, and 0 where tp is 0.
    f1 = _safe_divide(2 * tp, (predicted + support).astype(np.float64))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "accuracy": float(tp.sum() / max(confusion.sum(), 1)),
    }
