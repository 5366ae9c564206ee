"""The generative evaluator keeps the real rows of each eval batch and turns them into FID, KID
and conditional accuracy equal to jaxvision.evaluation.fid on the same features."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.evaluation import fid
from jaxvision.evaluation.generative import GenerativeEvaluator

KID = dict(kid_subsets=5, kid_subset_size=20, kid_seed=3)


def batches(rng, sizes, dim=6, padded_last=True):
    """Eval outputs of len(sizes) batches of 8 rows; the last has 8 - padding real rows."""
    out = []
    for i, _ in enumerate(sizes):
        mask = np.ones(8, bool)
        if padded_last and i == len(sizes) - 1:
            mask[5:] = False
        requested = rng.integers(0, 3, 8)
        read = np.where(rng.random(8) < 0.75, requested, (requested + 1) % 3)
        out.append(
            {
                "real_features": rng.normal(size=(8, dim)).astype(np.float32),
                "fake_features": (rng.normal(size=(8, dim)) * 1.5 + 0.3).astype(np.float32),
                "fake_labels": requested,
                "fake_predicted": read,
                "mask": mask,
            }
        )
    return out


def test_metrics_equal_the_functions_on_the_kept_rows(tmp_path):
    rng = np.random.default_rng(0)
    outputs = batches(rng, range(4))
    evaluator = GenerativeEvaluator(**KID)
    for out in outputs:
        evaluator.add({k: jnp.asarray(v) for k, v in out.items()})  # device arrays, as jitted
    metrics = evaluator.result("eval", workdir=str(tmp_path), step=7)

    keep = lambda key: np.concatenate([o[key][o["mask"]] for o in outputs])  # noqa: E731
    real, fake = keep("real_features"), keep("fake_features")
    assert len(real) == len(fake) == 29  # 3 full batches and 5 real rows of the last
    assert metrics["eval/fid"] == pytest.approx(fid.fid_from_features(real, fake), abs=1e-9)
    kid = fid.kernel_inception_distance(real, fake, subsets=5, subset_size=20, seed=3)
    assert (metrics["eval/kid"], metrics["eval/kid_std"]) == pytest.approx(kid, abs=1e-12)
    requested, read = keep("fake_labels"), keep("fake_predicted")
    assert metrics["eval/cond_acc"] == pytest.approx(np.mean(requested == read))
    assert 0.5 < metrics["eval/cond_acc"] < 1.0
    with open(tmp_path / "eval" / "eval_step7.json") as f:
        record = json.load(f)
    assert record["real"] == record["fake"] == 29
    label = str(requested[0])
    assert record["per_label_accuracy"][label] == pytest.approx(
        np.mean(read[requested == requested[0]] == requested[0])
    )


def test_fixed_real_features_and_fake_mask():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 4))
    evaluator = GenerativeEvaluator(real_features=real, **KID)
    fakes = [rng.normal(size=(8, 4)) + 1.0 for _ in range(3)]
    fake_mask = np.array([True] * 6 + [False] * 2)
    for f in fakes:
        evaluator.add({"fake_features": f, "fake_mask": fake_mask, "mask": np.zeros(8, bool)})
    metrics = evaluator.result("gen")
    kept = np.concatenate([f[fake_mask] for f in fakes])
    assert set(metrics) == {"gen/fid", "gen/kid", "gen/kid_std"}  # no labels: no cond_acc
    assert metrics["gen/fid"] == pytest.approx(fid.fid_from_features(real, kept), abs=1e-9)
    # The same distribution scores far lower than a shifted one.
    same = GenerativeEvaluator(real_features=real, **KID)
    same.add({"fake_features": rng.normal(size=(40, 4))})
    assert same.result("gen")["gen/fid"] < metrics["gen/fid"] / 5


def test_missing_keys_are_one_line_errors():
    with pytest.raises(UserError, match="'fake_features'"):
        GenerativeEvaluator().add({"real_features": np.zeros((2, 3))})
    with pytest.raises(UserError, match="'real_features'"):
        GenerativeEvaluator().add({"fake_features": np.zeros((2, 3))})
    with pytest.raises(UserError, match="'fake_predicted'"):
        GenerativeEvaluator().add(
            {
                "real_features": np.zeros((2, 3)),
                "fake_features": np.zeros((2, 3)),
                "fake_labels": np.zeros(2, int),
            }
        )
    evaluator = GenerativeEvaluator()
    evaluator.add({"real_features": np.zeros((1, 3)), "fake_features": np.zeros((1, 3))})
    with pytest.raises(UserError, match="at least 2 real and 2 generated"):
        evaluator.result("eval")


def test_feature_functions_and_quantisation():
    from jaxvision.evaluation import digits_fid
    from jaxvision.evaluation.generative import feature_function, to_uint8

    x = jnp.asarray([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 128, 191, 255, 255])
    assert to_uint8(x).dtype == jnp.uint8
    assert feature_function("digits") is digits_fid.digits_features
    with pytest.raises(UserError, match="pytorch-fid's weights"):
        feature_function("inception")
    with pytest.raises(UserError, match="unknown FID features 'clip'"):
        feature_function("clip")
