"""Mixup/CutMix: exact blends and boxes, targets that match, determinism, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.train.mixing import mixup_cutmix

B, H, W, C, K = 6, 12, 10, 3, 5


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
    labels = jax.nn.one_hot(rng.integers(0, K, B), K) * 0.9 + 0.1 / K  # smoothed
    return images, labels


@pytest.mark.slow
def test_mixup_blends_exactly_and_targets_sum_to_one():
    images, labels = _batch()
    lams = []
    for seed in range(10):
        out, targets, info = mixup_cutmix(
            jax.random.PRNGKey(seed), images, labels, mixup_alpha=0.8, cutmix_alpha=0.0
        )
        lam = np.float32(info["lam"])
        lams.append(lam)
        assert 0.0 <= lam <= 1.0 and (np.asarray(info["box"]) == -1).all()
        x = np.asarray(images)
        np.testing.assert_array_equal(out, lam * x + (np.float32(1) - lam) * x[::-1])
        y = np.asarray(labels)
        np.testing.assert_allclose(targets, lam * y + (1 - lam) * y[::-1], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, rtol=1e-6)
    assert len(set(lams)) == 10


def test_cutmix_box_matches_corrected_lambda():
    # Example i is the constant i + 1, so a pixel's value says which example it came from.
    images = jnp.broadcast_to(jnp.arange(1.0, B + 1)[:, None, None, None], (B, H, W, C))
    _, labels = _batch()
    areas = set()
    for seed in range(30):
        out, targets, info = mixup_cutmix(
            jax.random.PRNGKey(seed), images, labels, mixup_alpha=0.0, cutmix_alpha=1.0
        )
        out, lam, box = np.asarray(out), float(info["lam"]), np.asarray(info["box"])
        y0, x0, y1, x1 = box
        assert 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W
        for i in range(B):
            pasted = out[i] == B - i  # the value of the partner, example B - 1 - i
            own = out[i] == i + 1
            assert (pasted | own).all()  # pixels are copied, never blended
            expected = np.zeros((H, W, C), bool)
            expected[y0:y1, x0:x1] = True
            np.testing.assert_array_equal(pasted, expected)
        count = (y1 - y0) * (x1 - x0)
        areas.add(int(count))
        np.testing.assert_allclose(count / (H * W), 1 - lam, atol=1e-6)
        y = np.asarray(labels)
        np.testing.assert_allclose(targets, lam * y + (1 - lam) * y[::-1], rtol=1e-5)
        np.testing.assert_allclose(np.asarray(targets).sum(-1), 1.0, rtol=1e-6)
    assert len(areas) > 5


def test_switch_prob_picks_both_methods():
    images, labels = _batch()
    cutmix = [
        bool(mixup_cutmix(jax.random.PRNGKey(s), images, labels)[2]["box"][0] >= 0)
        for s in range(40)
    ]
    assert 8 < sum(cutmix) < 32


@pytest.mark.parametrize("kwargs", [{"prob": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}])
def test_no_mixing_returns_inputs_unchanged(kwargs):
    images, labels = _batch()
    for seed in range(5):
        out, targets, info = mixup_cutmix(jax.random.PRNGKey(seed), images, labels, **kwargs)
        np.testing.assert_array_equal(out, images)
        np.testing.assert_array_equal(targets, labels)
        assert float(info["lam"]) == 1.0 and (np.asarray(info["box"]) == -1).all()


def test_deterministic_per_rng_and_jit_compiles_once():
    images, labels = _batch()
    traces = 0

    def mix(rng, images, labels):
        nonlocal traces
        traces += 1
        return mixup_cutmix(rng, images, labels)

    jitted = jax.jit(mix)
    for seed in range(6):
        eager = mixup_cutmix(jax.random.PRNGKey(seed), images, labels)
        a = jitted(jax.random.PRNGKey(seed), images, labels)
        b = jitted(jax.random.PRNGKey(seed), images, labels)
        jax.tree.map(np.testing.assert_array_equal, a, b)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, eager)
    assert traces == 1
    different = jitted(jax.random.PRNGKey(100), images, labels)[0]
    assert not np.array_equal(different, jitted(jax.random.PRNGKey(101), images, labels)[0])
