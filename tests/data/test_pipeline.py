"""Train and eval batching: determinism, exact resume, process splits, epochs, padding."""

import itertools
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from jaxvision.data import (
    eval_batches,
    make_global_batch,
    num_eval_batches,
    open_dataset,
    train_batches,
)
from jaxvision.data.sources import ArraySource
from jaxvision.errors import UserError


def _indexed_source(num_examples: int, size: int = 8) -> ArraySource:
    """Example i is an image filled with i and label i, so a batch shows which examples it holds."""
    images = np.broadcast_to(
        np.arange(num_examples, dtype=np.uint8)[:, None, None, None], (num_examples, size, size, 1)
    )
    return ArraySource(np.ascontiguousarray(images), np.arange(num_examples))


def _take(n, **kwargs):
    return list(itertools.islice(train_batches(**kwargs), n))


AUGMENTED = dict(global_batch_size=16, image_size=8, crop="pad", flip=True)


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batch_shapes_and_types():
    source = open_dataset("digits").train
    (batch,) = _take(1, source=source, seed=0, **AUGMENTED)
    assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    (batch,) = _take(
        1, source=source, seed=0, global_batch_size=4, image_size=6, crop="inception", flip=False
    )
    assert batch["image"].shape == (4, 6, 6, 1)


def test_train_is_deterministic_per_seed():
    source = open_dataset("digits").train
    first = _take(6, source=source, seed=3, **AUGMENTED)
    _assert_same(first, _take(6, source=source, seed=3, **AUGMENTED))
    other = _take(6, source=source, seed=4, **AUGMENTED)
    assert not np.array_equal(first[0]["label"], other[0]["label"])


def test_resume_replays_the_uninterrupted_run():
    source = open_dataset("digits").train
    full = _take(12, source=source, seed=0, **AUGMENTED)
    resumed = list(train_batches(source=source, seed=0, start_step=7, num_steps=5, **AUGMENTED))
    _assert_same(full[7:], resumed)


def test_processes_split_the_global_batch():
    source = open_dataset("digits").train
    whole = _take(5, source=source, seed=1, **AUGMENTED)
    parts = [
        _take(5, source=source, seed=1, process_index=p, process_count=2, **AUGMENTED)
        for p in range(2)
    ]
    for step in range(5):
        assert parts[0][step]["image"].shape == (8, 8, 8, 1)
        for key in ("image", "label"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])


def test_batch_must_divide_over_processes():
    with pytest.raises(UserError, match="not divisible"):
        train_batches(_indexed_source(10), seed=0, process_count=3, **AUGMENTED)
    with pytest.raises(UserError, match="unknown crop"):
        train_batches(
            _indexed_source(10), seed=0, global_batch_size=4, image_size=8, crop="x", flip=False
        )


def test_epochs_cover_every_example_and_reshuffle():
    source = _indexed_source(40)
    batches = _take(
        10, source=source, seed=0, global_batch_size=8, image_size=8, crop="none", flip=False
    )
    labels = np.concatenate([b["label"] for b in batches])
    epoch1, epoch2 = labels[:40], labels[40:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(40))
    assert not np.array_equal(epoch1, epoch2)
    assert not np.array_equal(epoch1, np.arange(40))
    # Without augmentation each image is its example, untouched.
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[:, 0, 0, 0], labels)
    # Seeds do not share orders: seed 1's first epoch is not seed 0's second.
    other = _take(
        5, source=source, seed=1, global_batch_size=8, image_size=8, crop="none", flip=False
    )
    assert not np.array_equal(np.concatenate([b["label"] for b in other]), epoch2)


def test_num_steps_bounds_the_iterator():
    batches = list(
        train_batches(
            _indexed_source(10),
            seed=0,
            global_batch_size=4,
            image_size=8,
            crop="none",
            flip=False,
            num_steps=7,
        )
    )
    assert len(batches) == 7


def test_worker_processes_give_the_same_batches(tmp_path):
    # Files decoded in worker processes: the source and transforms must pickle, and the output
    # must not depend on the worker count.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            array = np.full((20 + i, 30 - i, 3), 40 * i + (name == "b"), np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"{i}.png")
    source = open_dataset("folder", data_dir=str(tmp_path)).train
    kwargs = dict(
        source=source,
        seed=0,
        global_batch_size=4,
        image_size=12,
        crop="inception",
        flip=True,
        num_steps=4,
    )
    in_process = list(train_batches(**kwargs))
    workers = train_batches(**kwargs, worker_count=2)
    _assert_same(in_process, list(workers))
    assert in_process[0]["image"].shape == (4, 12, 12, 3)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once(process_count):
    source = _indexed_source(21)
    per_process = [
        list(
            eval_batches(
                source,
                global_batch_size=8,
                image_size=8,
                crop_ratio=1.0,
                process_index=p,
                process_count=process_count,
            )
        )
        for p in range(process_count)
    ]
    seen = []
    for batches in per_process:
        assert len(batches) == num_eval_batches(21, 8) == 3
        for batch in batches:
            b = 8 // process_count
            assert batch["image"].shape == (b, 8, 8, 1) and batch["image"].dtype == np.uint8
            assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
            real = batch["mask"]
            np.testing.assert_array_equal(batch["image"][real, 0, 0, 0], batch["label"][real])
            assert (batch["image"][~real] == 0).all()
            seen.extend(batch["label"][real].tolist())
    assert sorted(seen) == list(range(21))
    if process_count == 1:
        assert seen == list(range(21))  # in order


def test_eval_of_exact_multiple_has_no_padding():
    batches = list(
        eval_batches(_indexed_source(16), global_batch_size=8, image_size=8, crop_ratio=1.0)
    )
    assert len(batches) == 2 and all(b["mask"].all() for b in batches)


def test_num_eval_batches():
    assert [num_eval_batches(n, 8) for n in (0, 1, 8, 9, 16, 17)] == [0, 1, 1, 2, 2, 3]


def test_make_global_batch_on_one_device():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    (batch,) = list(
        eval_batches(_indexed_source(4), global_batch_size=4, image_size=8, crop_ratio=1.0)
    )
    global_batch = make_global_batch(batch, sharding)
    assert global_batch.keys() == batch.keys()
    for key, value in global_batch.items():
        assert isinstance(value, jax.Array) and value.sharding == sharding
        assert value.shape == batch[key].shape and value.dtype == batch[key].dtype
        np.testing.assert_array_equal(np.asarray(value), batch[key])


def test_no_tensorflow_imported():
    open_dataset("digits")
    assert "tensorflow" not in sys.modules


def test_repeated_augmentation_puts_copies_in_separate_blocks():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(4, 1).repeat(4, 2)
    source = ArraySource(images, np.arange(20))
    kwargs = dict(global_batch_size=8, image_size=4, crop="pad", flip=True, seed=3, pad=1)
    batches = train_batches(source, repeats=2, num_steps=5, **kwargs)
    seen = []
    for batch in batches:
        first, second = batch["label"][:4], batch["label"][4:]
        np.testing.assert_array_equal(first, second)  # the same 4 images, twice
        # ...augmented independently: some copy differs from its twin.
        assert not np.array_equal(batch["image"][:4], batch["image"][4:])
        seen.extend(first.tolist())
    # 5 steps x 4 distinct images = one epoch of 20: every image exactly once.
    assert sorted(seen) == list(range(20))
    with pytest.raises(UserError, match="divisible by repeats=3"):
        train_batches(source, repeats=3, **kwargs)
