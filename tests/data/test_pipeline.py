"""Train and eval batching: determinism, exact resume, process splits, epochs, padding."""

import dataclasses
import itertools
import sys
from typing import ClassVar

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from jaxvision.data import (
    EvalTransform,
    TrainTransform,
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


def _take(n, source, transform, **kwargs):
    return list(itertools.islice(train_batches(source, transform, **kwargs), n))


PAD_FLIP = TrainTransform(8, crop="pad", flip=True)
NO_AUGMENT = TrainTransform(8, crop="none", flip=False)
AUGMENTED = dict(global_batch_size=16)


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batch_shapes_and_types():
    source = open_dataset("digits").train
    (batch,) = _take(1, source, PAD_FLIP, seed=0, **AUGMENTED)
    assert batch["image"].shape == (16, 8, 8, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    inception = TrainTransform(6, crop="inception", flip=False)
    (batch,) = _take(1, source, inception, seed=0, global_batch_size=4)
    assert batch["image"].shape == (4, 6, 6, 1)


def test_train_is_deterministic_per_seed():
    source = open_dataset("digits").train
    first = _take(6, source, PAD_FLIP, seed=3, **AUGMENTED)
    _assert_same(first, _take(6, source, PAD_FLIP, seed=3, **AUGMENTED))
    other = _take(6, source, PAD_FLIP, seed=4, **AUGMENTED)
    assert not np.array_equal(first[0]["label"], other[0]["label"])


def test_resume_replays_the_uninterrupted_run():
    source = open_dataset("digits").train
    full = _take(12, source, PAD_FLIP, seed=0, **AUGMENTED)
    resumed = list(train_batches(source, PAD_FLIP, seed=0, start_step=7, num_steps=5, **AUGMENTED))
    _assert_same(full[7:], resumed)


def test_processes_split_the_global_batch():
    source = open_dataset("digits").train
    whole = _take(5, source, PAD_FLIP, seed=1, **AUGMENTED)
    parts = [
        _take(5, source, PAD_FLIP, seed=1, process_index=p, process_count=2, **AUGMENTED)
        for p in range(2)
    ]
    for step in range(5):
        assert parts[0][step]["image"].shape == (8, 8, 8, 1)
        for key in ("image", "label"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])


def test_batch_must_divide_over_processes():
    with pytest.raises(UserError, match="not divisible"):
        train_batches(_indexed_source(10), PAD_FLIP, seed=0, process_count=3, **AUGMENTED)
    with pytest.raises(UserError, match="unknown crop"):
        TrainTransform(8, crop="x", flip=False)


def test_epochs_cover_every_example_and_reshuffle():
    source = _indexed_source(40)
    batches = _take(10, source, NO_AUGMENT, seed=0, global_batch_size=8)
    labels = np.concatenate([b["label"] for b in batches])
    epoch1, epoch2 = labels[:40], labels[40:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(40))
    assert not np.array_equal(epoch1, epoch2)
    assert not np.array_equal(epoch1, np.arange(40))
    # Without augmentation each image is its example, untouched.
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[:, 0, 0, 0], labels)
    # Seeds do not share orders: seed 1's first epoch is not seed 0's second.
    other = _take(5, source, NO_AUGMENT, seed=1, global_batch_size=8)
    assert not np.array_equal(np.concatenate([b["label"] for b in other]), epoch2)


def test_num_steps_bounds_the_iterator():
    batches = list(
        train_batches(_indexed_source(10), NO_AUGMENT, seed=0, global_batch_size=4, num_steps=7)
    )
    assert len(batches) == 7


@pytest.mark.slow
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
        transform=TrainTransform(12, crop="inception", flip=True),
        seed=0,
        global_batch_size=4,
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
                EvalTransform(8, crop_ratio=1.0),
                global_batch_size=8,
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
        eval_batches(_indexed_source(16), EvalTransform(8, crop_ratio=1.0), global_batch_size=8)
    )
    assert len(batches) == 2 and all(b["mask"].all() for b in batches)


def test_num_eval_batches():
    assert [num_eval_batches(n, 8) for n in (0, 1, 8, 9, 16, 17)] == [0, 1, 1, 2, 2, 3]


def test_make_global_batch_on_one_device():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    (batch,) = list(
        eval_batches(_indexed_source(4), EvalTransform(8, crop_ratio=1.0), global_batch_size=4)
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
    kwargs = dict(global_batch_size=8, seed=3)
    transform = TrainTransform(4, crop="pad", flip=True, pad=1)
    batches = train_batches(source, transform, repeats=2, num_steps=5, **kwargs)
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
        train_batches(source, transform, repeats=3, **kwargs)


def _boxes(i: int, n: int) -> np.ndarray:
    """Example i's n boxes [n, 4], every value distinct and nonzero."""
    return (1000 * i + 1 + np.arange(4 * n, dtype=np.float32)).reshape(n, 4)


def _box_source(num_boxes) -> list[dict]:
    """Example i: an image filled with i, label i, `num_boxes[i]` boxes and an extra field."""
    return [
        {
            "image": np.full((8, 8, 1), i, np.uint8),
            "label": i,
            "boxes": _boxes(i, n),
            "id": 100 + i,
        }
        for i, n in enumerate(num_boxes)
    ]


@dataclasses.dataclass(frozen=True)
class _BoxTransform:
    """A detection-like transform: the image as the classification transform leaves it, the
    boxes moved, every other field passed through; at most 5 boxes per example."""

    ragged: ClassVar = (("boxes", 5),)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        assert example["id"] == 100 + example["label"]  # the whole example comes in
        example = NO_AUGMENT(example, rng)  # changes `image`, passes `boxes` and `id` through
        return {**example, "boxes": example["boxes"] + 0.5}


def test_ragged_boxes_are_padded_with_a_mask_and_extra_fields_pass_through():
    num_boxes = [i % 6 for i in range(12)]  # 0 to 5 boxes per example
    batches = list(
        train_batches(
            _box_source(num_boxes), _BoxTransform(), seed=0, global_batch_size=4, num_steps=6
        )
    )
    seen = []
    for batch in batches:
        assert set(batch) == {"image", "label", "boxes", "boxes_mask", "id"}
        assert batch["boxes"].shape == (4, 5, 4) and batch["boxes"].dtype == np.float32
        assert batch["boxes_mask"].shape == (4, 5) and batch["boxes_mask"].dtype == bool
        assert batch["id"].dtype == np.int32
        for row, i in enumerate(batch["label"]):
            n = num_boxes[i]
            np.testing.assert_array_equal(batch["image"][row, 0, 0, 0], i)
            assert batch["id"][row] == 100 + i
            np.testing.assert_array_equal(batch["boxes"][row, :n], _boxes(i, n) + 0.5)
            np.testing.assert_array_equal(batch["boxes"][row, n:], 0.0)
            np.testing.assert_array_equal(batch["boxes_mask"][row], np.arange(5) < n)
            seen.append(int(i))
    # Two epochs of 12: every example, with no boxes (i = 0, 6) up to 5, twice.
    assert sorted(seen) == sorted(list(range(12)) * 2)


def test_too_many_ragged_rows_is_a_clear_error():
    source = _box_source([2, 6, 1, 0])  # example 1 has 6 boxes, the limit is 5
    batches = train_batches(source, _BoxTransform(), seed=0, global_batch_size=4, num_steps=1)
    with pytest.raises(UserError, match="an example has 6 boxes rows, more than the 5"):
        next(iter(batches))
