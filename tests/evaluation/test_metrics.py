"""Per-class metrics against sklearn; jax confusion counts against numpy's, with a mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics

from jaxvision.evaluation import metrics

K, N = 7, 500


def _random_predictions(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, N)
    # Mostly right, and class 6 never predicted so that precision divides by zero there.
    preds = np.where(rng.random(N) < 0.6, labels, rng.integers(0, K - 1, N))
    preds[preds == K - 1] = 0
    return labels, preds


def test_confusion_matrix_equals_sklearn():
    labels, preds = _random_predictions()
    confusion = metrics.confusion_matrix(labels, preds, K)
    assert confusion.dtype == np.int64 and confusion.shape == (K, K)
    np.testing.assert_array_equal(
        confusion, sklearn.metrics.confusion_matrix(labels, preds, labels=range(K))
    )


def test_per_class_report_equals_sklearn():
    labels, preds = _random_predictions()
    report = metrics.per_class_report(metrics.confusion_matrix(labels, preds, K))
    p, r, f, s = sklearn.metrics.precision_recall_fscore_support(
        labels, preds, labels=range(K), zero_division=0
    )
    np.testing.assert_allclose(report["precision"], p, rtol=1e-12)
    np.testing.assert_allclose(report["recall"], r, rtol=1e-12)
    np.testing.assert_allclose(report["f1"], f, rtol=1e-12)
    np.testing.assert_array_equal(report["support"], s)
    assert report["precision"][K - 1] == 0.0  # never predicted
    for name, average in (("macro_precision", p), ("macro_recall", r), ("macro_f1", f)):
        assert report[name] == pytest.approx(average.mean(), rel=1e-12)
    macro = sklearn.metrics.precision_recall_fscore_support(
        labels, preds, labels=range(K), average="macro", zero_division=0
    )
    assert report["macro_f1"] == pytest.approx(macro[2], rel=1e-12)
    assert report["accuracy"] == pytest.approx(sklearn.metrics.accuracy_score(labels, preds))


def test_report_of_a_class_never_seen_nor_predicted_is_zero():
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    report = metrics.per_class_report(confusion)
    np.testing.assert_allclose(report["precision"], [1.0, 2 / 3, 0.0])
    np.testing.assert_allclose(report["recall"], [0.75, 1.0, 0.0])
    np.testing.assert_allclose(report["f1"], [6 / 7, 0.8, 0.0])


def test_jax_confusion_counts_equal_numpy_with_a_mask():
    labels, preds = _random_predictions(seed=1)
    logits = jax.nn.one_hot(preds, K) * 5.0 + jax.random.normal(jax.random.key(0), (N, K))
    preds = np.asarray(jnp.argmax(logits, -1))
    mask = np.random.default_rng(2).random(N) < 0.8
    counts = jax.jit(metrics.confusion_counts, static_argnums=3)(
        logits, jnp.asarray(labels), jnp.asarray(mask), K
    )
    assert counts.dtype == jnp.int32 and counts.shape == (K, K)
    np.testing.assert_array_equal(counts, metrics.confusion_matrix(labels[mask], preds[mask], K))
    assert int(counts.sum()) == mask.sum()


def test_accumulator_adds_batches_of_device_counts():
    labels, preds = _random_predictions(seed=3)
    logits = jax.nn.one_hot(preds, K)
    acc = metrics.ConfusionAccumulator(K)
    for start in range(0, N, 128):  # the last batch padded with masked-out rows
        part = slice(start, start + 128)
        pad = 128 - len(labels[part])
        acc.add_counts(
            metrics.confusion_counts(
                jnp.pad(logits[part], ((0, pad), (0, 0))),
                jnp.pad(jnp.asarray(labels[part]), (0, pad)),
                jnp.arange(128) < 128 - pad,
                K,
            )
        )
    np.testing.assert_array_equal(acc.confusion, metrics.confusion_matrix(labels, preds, K))
    acc.add(labels[:10], preds[:10])
    assert acc.confusion.sum() == N + 10
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix([0, K], [0, 0], K)
