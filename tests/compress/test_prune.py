"""Magnitude pruning: masks against a hand computation, the optimizer that keeps them, and a
fine-tune whose pruned weights stay zero through training and a resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.commands.prune import finetune, plot, prune_run, prune_table, training_program
from jaxvision.compress import prune
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor

PARAMS = {
    "a": {"kernel": np.array([[0.1, -0.5], [0.3, 0.05]], np.float32), "bias": np.ones(2)},
    "b": {"kernel": np.array([[[[-0.2, 0.4, 0.01]]]], np.float32)},
    "fc": {"kernel": np.array([[0.001, 0.002]], np.float32)},
}


def test_unstructured_masks_drop_the_smallest_weights_globally():
    masks = prune.magnitude_masks(PARAMS, 0.5, skip=("fc",))
    assert set(masks) == {("a", "kernel"), ("b", "kernel")}  # no bias, no classifier
    # 7 weights, 3 smallest |w| (0.01, 0.05, 0.1) go, wherever they are.
    np.testing.assert_array_equal(masks[("a", "kernel")], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(masks[("b", "kernel")], [[[[1, 1, 0]]]])
    pruned = prune.apply_masks(PARAMS, masks)
    assert prune.sparsity_of(pruned, masks) == pytest.approx(3 / 7)
    np.testing.assert_array_equal(pruned["fc"]["kernel"], PARAMS["fc"]["kernel"])


def test_structured_masks_drop_whole_output_channels_by_norm():
    # Output channel 0: |0.9| + |0.0| (L1 0.9, L2 0.9); channel 1: 0.5 + 0.5 (L1 1.0, L2 0.71).
    params = {"c": {"kernel": np.array([[0.9, 0.5], [0.0, -0.5]], np.float32)}}
    l1 = prune.magnitude_masks(params, 0.5, structured=True)[("c", "kernel")]
    l2 = prune.magnitude_masks(params, 0.5, structured=True, norm="l2")[("c", "kernel")]
    np.testing.assert_array_equal(l1, [[0, 1], [0, 1]])
    np.testing.assert_array_equal(l2, [[1, 0], [1, 0]])
    with pytest.raises(UserError, match="sparsity=1.0"):
        prune.magnitude_masks(params, 1.0)


def test_keep_masked_holds_zeros_and_leaves_the_rest_to_the_optimizer():
    params = {"w": {"kernel": jnp.array([[1.0, -2.0], [3.0, 0.5]])}}
    masks = {("w", "kernel"): np.array([[1, 0], [0, 1]], np.float32)}
    base = optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.1, momentum=0.9))
    tx = optax.chain(base, prune.keep_masked(masks))
    target = jnp.array([[5.0, 5.0], [-5.0, -5.0]])
    loss = lambda p: jnp.sum((p["w"]["kernel"] - target) ** 2)  # noqa: E731
    p, state = params, tx.init(params)
    ref, ref_state = params, base.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        p = optax.apply_updates(p, updates)
        ref_updates, ref_state = base.update(jax.grad(loss)(ref), ref_state, ref)
        ref = optax.apply_updates(ref, ref_updates)
    kernel = np.asarray(p["w"]["kernel"])
    assert kernel[0, 1] == 0 and kernel[1, 0] == 0
    # Each weight's loss is its own: the kept ones move exactly as without the mask.
    np.testing.assert_allclose(
        kernel[[0, 1], [0, 1]], np.asarray(ref["w"]["kernel"])[[0, 1], [0, 1]]
    )
    np.testing.assert_array_equal(state[1].masks["w"]["kernel"], masks[("w", "kernel")])


@pytest.mark.slow
def test_pruned_weights_stay_zero_through_finetuning_and_resume(digits_run, tmp_path):
    workdir, _ = digits_run
    out = str(tmp_path / "pruned")
    (row,) = prune_run(workdir, out, [0.5], structured=False, norm="l1", steps=2, lr=None, sweep=[])
    assert row["zeros_after_finetune"] >= 0.5
    run = os.path.join(out, "sparsity_0.50")
    masks_path = os.path.join(run, "start", "masks.npz")
    masks = prune.load_masks(masks_path)
    tuned = os.path.join(run, "finetune")
    params = Predictor.from_workdir(tuned).variables["params"]
    start = Predictor.from_workdir(os.path.join(run, "start")).variables["params"]
    for path, mask in masks.items():
        weights = np.asarray(params[path[0]][path[1]])
        assert np.all(weights[mask == 0] == 0), path
    assert any(  # the rest did train
        not np.array_equal(params[p[0]][p[1]], start[p[0]][p[1]]) for p in masks
    )
    # Resume to step 4 with the mask file replaced by all-ones: the masks come back from the
    # checkpoint's optimizer state, so the pruned weights still stay zero.
    prune.save_masks(masks_path, {k: np.ones_like(v) for k, v in masks.items()})
    record = Predictor.from_workdir(workdir).record
    assert record["program"] == "experiments.classification"  # what trained it fine-tunes it
    final = finetune(workdir, record, os.path.join(run, "start"), masks_path, tuned, 4, None)
    assert final["step"] == 4
    resumed = Predictor.from_workdir(tuned).variables["params"]
    for path, mask in masks.items():
        weights = np.asarray(resumed[path[0]][path[1]])
        assert np.all(weights[mask == 0] == 0), path
        assert not np.array_equal(weights, np.asarray(params[path[0]][path[1]]))


def test_accuracy_against_sparsity_table_and_curve(digits_run, tmp_path):
    workdir, final = digits_run
    rows = prune_run(
        workdir, str(tmp_path), [0.5], structured=True, norm="l2", steps=0, lr=None, sweep=[0.0]
    )
    assert [r["sparsity"] for r in rows] == [0.0, 0.5]
    assert rows[0]["top1_pruned"] == pytest.approx(final["eval/top1"])  # nothing pruned
    assert rows[0]["weights_pruned"] == 0 and rows[1]["top1_finetuned"] is None
    # Half of every kernel's output channels but the classifier's: conv1, conv2, fc1.
    assert rows[1]["weights_pruned"] == (3 * 3 * 1 * 32 + 3 * 3 * 32 * 64 + 256 * 256) // 2
    text = prune_table(rows, "structured (l2)")
    assert text.splitlines()[-1].split() == ["0.50", f"{rows[1]['top1_pruned']:.4f}"]
    plot(rows, str(tmp_path / "curve.png"), "structured (l2)")
    with open(tmp_path / "curve.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_fine_tune_runs_the_recorded_program():
    import experiments.classification as program

    assert training_program({}) == (program.train_and_evaluate, program.default_config)
    with pytest.raises(UserError) as e:
        training_program({"program": "experiments.my_fork"})
    assert str(e.value) == (
        "fine-tuning runs the program that trained the run, experiments.my_fork, which is not "
        "on the Python path: run from the folder that holds it, or prune with --steps=0"
    )
    with pytest.raises(UserError, match="the run's program jaxvision.errors has no "):
        training_program({"program": "jaxvision.errors"})


def test_masks_of_other_values_than_0_and_1_are_refused(tmp_path):
    path = str(tmp_path / "masks.npz")
    prune.save_masks(path, {("w", "kernel"): np.array([[1, 0], [0, 1]])})
    assert prune.load_masks(path)[("w", "kernel")].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    np.savez(path, **{"w/kernel": np.array([[0.5, 0.0], [1.0, 2.0]], np.float32)})
    with pytest.raises(UserError, match=r"w/kernel holds values other than 0 and 1 \(float32\)"):
        prune.load_masks(path)
