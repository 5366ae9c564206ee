"""Orbax round trip of the full train state, keep-N and latest-step resume."""

import functools
import os

import jax
import numpy as np
import optax
import pytest

from jaxvision import models
from jaxvision.checkpoint import Checkpointer
from jaxvision.sharding import abstract_like, make_mesh, replicated
from jaxvision.tasks.classification import Classification
from jaxvision.train import optim, steps
from jaxvision.train.state import init_model_state, init_train_state


@functools.cache  # the states are only read: each is built once for this module
def _trained_state():
    # The model, optimizer and batch of tests/train/test_steps.py's ResNet case: the same
    # programs, compiled once for both (the compilation cache).
    model = models.build("resnet18", num_classes=10, stem="small", width=8)
    tx = optim.make_optimizer("adamw", optax.constant_schedule(3e-3), weight_decay=1e-4)
    task = Classification(model, mean=(127.5,), std=(64.0,))
    example = {"image": np.zeros((1, 8, 8, 1), np.uint8)}
    model_state = init_model_state(task.init_variables(example), tx, jax.random.PRNGKey(0))
    state = init_train_state({"model": model_state})
    step = jax.jit(steps.make_train_step(task, tx))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, (32,), dtype=np.int32),
    }
    state, _ = step(state, batch)  # one step: moments and BatchNorm statistics moved
    return state


@pytest.mark.slow
def test_save_restore_round_trip_is_exact(tmp_path):
    state = _trained_state()
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), save_every_steps=1, keep=2)
    assert checkpointer.latest_step() is None
    meta = {"data": {"next_step": 2, "seed": 0}, "metric_sums": {"train/loss": 1.5}}
    assert checkpointer.save(1, state, meta)
    checkpointer.wait()

    mesh = make_mesh()
    shardings = jax.tree.map(lambda _: replicated(mesh), state)
    restored, restored_meta = Checkpointer(
        str(tmp_path / "ckpt"), save_every_steps=1, keep=2
    ).restore(abstract_like(state, shardings))
    assert int(restored.step) == 1
    assert restored_meta == meta
    leaves, tree = jax.tree.flatten(state)
    restored_leaves, restored_tree = jax.tree.flatten(restored)
    assert tree == restored_tree
    for a, b in zip(leaves, restored_leaves, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    checkpointer.close()


def test_interval_and_keep_last_k(tmp_path):
    state = _trained_state()
    checkpointer = Checkpointer(str(tmp_path), save_every_steps=2, keep=2)
    saved = [checkpointer.save(s, state) for s in range(1, 8)]
    assert saved == [False, True, False, True, False, True, False]
    assert checkpointer.save(7, state, force=True)
    checkpointer.wait()
    assert checkpointer.all_steps() == [6, 7]
    assert checkpointer.latest_step() == 7
    checkpointer.close()


def test_an_interrupted_save_leaves_the_previous_checkpoint_latest(tmp_path):
    state = _trained_state()
    checkpointer = Checkpointer(str(tmp_path), save_every_steps=1, keep=3)
    checkpointer.save(1, state, {"step": 1})
    checkpointer.close()
    # What a kill -9 during the save of step 2 leaves behind: an unfinished temporary directory.
    os.makedirs(tmp_path / "2.orbax-checkpoint-tmp" / "state")
    reopened = Checkpointer(str(tmp_path), save_every_steps=1, keep=3)
    assert reopened.latest_step() == 1
    mesh = make_mesh()
    shardings = jax.tree.map(lambda _: replicated(mesh), state)
    restored, meta = reopened.restore(abstract_like(state, shardings))
    assert meta == {"step": 1} and int(restored.step) == 1
    reopened.close()
