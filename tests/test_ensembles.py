"""Ensembles and soups: one vmapped forward equals a loop over members, ECE against a plain
loop and a hand example, the stack error, uniform and greedy soups on known answers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ensembles

K = 5


class _TinyNet(nn.Module):
    """Conv -> BatchNorm (running statistics) -> ReLU -> mean pool -> Dense."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(K)(x)


def _members(num_members=3):
    """Members with different random inits and different (non-trivial) BatchNorm statistics."""
    model = _TinyNet()
    images = jnp.zeros((1, 8, 8, 3))
    members = []
    for m in range(num_members):
        variables = model.init(jax.random.key(m), images)
        stats = variables["batch_stats"]["BatchNorm_0"]
        key_mean, key_var = jax.random.split(jax.random.key(100 + m))
        variables["batch_stats"]["BatchNorm_0"] = {
            "mean": jax.random.normal(key_mean, stats["mean"].shape),
            "var": jax.random.uniform(key_var, stats["var"].shape, minval=0.5, maxval=2.0),
        }
        members.append(variables)
    return model, members


@pytest.mark.slow
def test_member_probs_equals_a_loop_over_members():
    model, members = _members()
    images = jax.random.normal(jax.random.key(7), (6, 8, 8, 3))

    def apply_fn(variables, x):
        return model.apply(variables, x, train=False)

    stacked = ensembles.stack(members)
    assert stacked["params"]["Dense_0"]["kernel"].shape == (3, 4, K)

    probs = ensembles.member_probs(apply_fn, stacked, images)
    jitted = jax.jit(lambda v, x: ensembles.member_probs(apply_fn, v, x))(stacked, images)
    expected = np.stack([jax.nn.softmax(apply_fn(v, images), axis=-1) for v in members])
    assert probs.shape == (3, 6, K) and probs.dtype == jnp.float32
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jitted, expected, rtol=1e-6, atol=1e-6)
    # The members really differ, so the comparison checks the member axis lines up.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    mean = ensembles.ensemble_probs(probs)
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mean.sum(axis=-1), 1.0, rtol=1e-6)


def _fc(rows):
    return {"params": {"fc": {"kernel": jnp.zeros((rows, 10)), "bias": jnp.zeros(10)}}}


def test_stack_names_the_first_differing_path():
    stacked = ensembles.stack([_fc(2), _fc(2)])
    assert stacked["params"]["fc"]["kernel"].shape == (2, 2, 10)
    with pytest.raises(ValueError) as error:
        ensembles.stack([_fc(512), _fc(512), _fc(256)])
    assert str(error.value) == (
        "members have different architectures: params/fc/kernel is (512, 10) in member 0 "
        "and (256, 10) in member 2"
    )
    missing = _fc(512)
    del missing["params"]["fc"]["bias"]
    with pytest.raises(ValueError, match="params/fc/bias is in member 0 but not in member 1"):
        ensembles.stack([_fc(512), missing])
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _fc(512))
    with pytest.raises(ValueError, match="params/fc/bias is float32 in member 0 and bfloat16"):
        ensembles.stack([_fc(512), half])


def _reference_ece(probs, labels, num_bins):
    """Guo et al. 2017, written out bin by bin."""
    confidences = probs.max(axis=1)
    accuracies = probs.argmax(axis=1) == labels
    ece = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        in_bin = (confidences > lo) & (confidences <= hi)
        if in_bin.any():
            gap = abs(accuracies[in_bin].mean() - confidences[in_bin].mean())
            ece += gap * in_bin.sum() / len(labels)
    return ece


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("num_bins", [1, 10, 15])
def test_ece_equals_a_reference_loop(seed, num_bins):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(400, 7)) * rng.uniform(0.1, 4.0)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.where(rng.random(400) < 0.5, probs.argmax(axis=1), rng.integers(0, 7, 400))
    ece = ensembles.expected_calibration_error(probs, labels, num_bins)
    assert isinstance(ece, float)
    np.testing.assert_allclose(ece, _reference_ece(probs, labels, num_bins), rtol=1e-10)


def test_ece_with_confidences_on_bin_edges():
    # Top confidences exactly k / 15 for k = 8..15, each in its own (lo, hi] bin.
    confidences = np.arange(8, 16) / 15
    probs = np.stack([confidences, 1 - confidences], axis=1)
    labels = np.array([0, 1] * 4)
    ece = ensembles.expected_calibration_error(probs, labels, num_bins=15)
    np.testing.assert_allclose(ece, _reference_ece(probs, labels, 15), rtol=1e-12)
    np.testing.assert_allclose(ece, np.abs(confidences - [1, 0] * 4).mean(), rtol=1e-12)


def test_ece_hand_example():
    # Two bins, (0, 0.5] and (0.5, 1]. Confidences 0.9 (right), 0.8 (wrong), 0.6 (right) fall in
    # the upper bin: |2/3 - 0.7667| * 3/4 = 0.075. 0.5 (right) sits on the edge and belongs to
    # the lower bin: |1 - 0.5| * 1/4 = 0.125. With [lo, hi) bins it would be 0.05 instead.
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    labels = np.array([0, 0, 0, 0])
    ece = ensembles.expected_calibration_error(probs, labels, num_bins=2)
    np.testing.assert_allclose(ece, 0.2, rtol=1e-12)


def test_ece_of_perfect_and_worst_calibration():
    # Confident and always right, or always right at the stated rate: 0.
    one_hot = np.eye(3)[[0, 1, 2, 1]]
    assert ensembles.expected_calibration_error(one_hot, np.array([0, 1, 2, 1])) == 0.0
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    labels = np.array([0] * 8 + [1, 2])
    assert ensembles.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # Confident and always wrong: 1.
    assert ensembles.expected_calibration_error(one_hot, np.array([1, 2, 0, 0])) == 1.0
    with pytest.raises(ValueError, match=r"probs \[N, K\] and labels \[N\]"):
        ensembles.expected_calibration_error(one_hot, np.array([0, 1]))


@pytest.mark.slow
def test_uniform_soup_averages_floats_and_keeps_equal_counters():
    _, members = _members(1)
    same = ensembles.uniform_soup([members[0]] * 3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), same, members[0])

    trees = [
        {"w": jnp.array([1.0, 2.0]), "h": jnp.array([1.0], jnp.bfloat16), "step": jnp.array(7)},
        {"w": jnp.array([3.0, 6.0]), "h": jnp.array([2.0], jnp.bfloat16), "step": jnp.array(7)},
    ]
    soup = ensembles.uniform_soup(trees)
    np.testing.assert_array_equal(soup["w"], [2.0, 4.0])
    assert soup["h"].dtype == jnp.bfloat16 and float(soup["h"][0]) == 1.5
    assert soup["step"].dtype == jnp.int32 and int(soup["step"]) == 7
    trees[1]["step"] = jnp.array(8)
    with pytest.raises(ValueError, match="cannot average step: .* member 0 and member 1"):
        ensembles.uniform_soup(trees)


def _scalar_members(values):
    return [{"params": {"w": jnp.array([v], jnp.float32)}} for v in values]


def _closeness(tree):
    """A toy held-out score: the nearer w is to 0, the better."""
    return -abs(float(tree["params"]["w"][0]))


def test_greedy_soup_rejects_members_that_hurt():
    # Own scores: -5, -1, -0.8, -0.3, -0.9, so the order tried is 3, 2, 4, 1, 0.
    #   {3}: w = 0.3 -> -0.3; + 2: mean(0.3, -0.8) = -0.25 -> -0.25, kept;
    #   + 4: mean(0.3, -0.8, -0.9) = -0.467, rejected; + 1: mean(0.3, -0.8, 1) = 0.167, kept;
    #   + 0 (the bad member): mean(0.3, -0.8, 1, 5) = 1.375, rejected.
    members = _scalar_members([5.0, 1.0, -0.8, 0.3, -0.9])
    calls = []

    def score_fn(tree):
        calls.append(tree)
        return _closeness(tree)

    soup, chosen = ensembles.greedy_soup(members, score_fn)
    assert chosen == [3, 2, 1]
    np.testing.assert_allclose(soup["params"]["w"], [0.5 / 3], rtol=1e-6)
    assert len(calls) == 5 + 4  # each member alone, then one candidate per later member

    # A given order skips the individual scores: start from member 1, member 0 is rejected.
    soup, chosen = ensembles.greedy_soup(members, _closeness, order=[1, 0])
    assert chosen == [1]
    np.testing.assert_array_equal(soup["params"]["w"], [1.0])
    with pytest.raises(ValueError, match="distinct member indices"):
        ensembles.greedy_soup(members, _closeness, order=[1, 1])


def test_greedy_soup_keeps_members_that_tie():
    # An equal score joins the soup (>=), as in the paper.
    soup, chosen = ensembles.greedy_soup(_scalar_members([2.0, 2.0, 9.0]), _closeness)
    assert chosen == [0, 1]
    np.testing.assert_array_equal(soup["params"]["w"], [2.0])
