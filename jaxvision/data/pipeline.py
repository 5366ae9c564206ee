"""Host input pipeline on grain: deterministic, resumable train batches and padded eval batches.

Train batches are cut from one infinite stream of examples that is reshuffled every epoch and
augmented with a generator seeded by the example's position in that stream. The global batch at
step `s` is stream elements `[s * B, (s + 1) * B)` and process `p` reads the `p`-th contiguous
block of `B / process_count` of them. Every batch is therefore a pure function of
(seed, step, process layout): resuming at step `s` replays exactly what an uninterrupted run
would have seen, whatever the number of prefetch workers.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Iterator, Sequence

import grain
import jax
import numpy as np
from absl import flags

from jaxvision.data import augment, transforms
from jaxvision.data.dataset import ArraySource
from jaxvision.errors import UserError

CROPS = ("inception", "pad", "none")

# Batches in flight per process: enough to hide a slow batch, small enough that ImageNet
# batches (1024 x 224 x 224 x 3 bytes = 150 MB) do not pile up in memory.
PREFETCH_BATCHES = 4
# Threads that each build whole batches of file-backed sources: PIL decode and resize release
# the GIL. In-memory sources are GIL-bound and build in the caller's thread instead (2.4 ms vs
# 5.2 ms per digits batch of 128 on a busy 2-core host); JAX's async dispatch still overlaps
# that work with the previous step.
NUM_THREADS = 4


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of `epoch`: a permutation of `range(num_examples)` drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


class _ShuffledEpochs(grain.MapDataset):
    """The source repeated forever, each epoch in its own random order.

    Element `i` is `source[perm_e[i % N]]` with `e = i // N`. This replaces grain's
    `shuffle().repeat()`, which reshuffles per epoch too but costs ~15 us per element (a
    Feistel-network index shuffle) and seeds epoch `e` with `seed + e`, so seed 1 would replay
    seed 0's orders one epoch later. A cached numpy permutation costs ~1 us per element.
    """

    def __init__(self, source: Sequence, seed: int, repeats: int = 1, batch_size: int = 1):
        super().__init__()
        self._source = source
        self._seed = seed
        # Repeated augmentation (Hoffer et al. 2020, DeiT): each global batch of B holds B / r
        # images r times, copy j in rows [j B / r, (j + 1) B / r) so that the copies land on
        # different devices; every copy is augmented on its own (its own stream position).
        self._repeats = repeats
        self._batch_size = batch_size

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"ShuffledEpochs(seed={self._seed})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if self._repeats > 1:
            step, row = divmod(index, self._batch_size)
            distinct = self._batch_size // self._repeats
            index = step * distinct + row % distinct
        epoch, position = divmod(index, len(self._source))
        order = _epoch_permutation(self._seed, epoch, len(self._source))
        return self._source[int(order[position])]


def _with_position(index: int, example):
    return index, example


@dataclasses.dataclass(frozen=True)
class _AtPosition:
    """Calls a positional transform with the stream index `_with_position` put beside the
    example."""

    transform: object

    def __call__(self, item: tuple, rng: np.random.Generator) -> dict:
        position, example = item
        return self.transform(example, rng, position=position)


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """The classification augmentation of one example, whole: `image` is cropped, flipped and
    augmented, every other field passes through. A task with geometric targets (boxes) brings
    its own transform that moves them with the image. A dataclass rather than a closure so
    worker processes can unpickle it.

    crop: "inception" (random-resized crop), "pad" (resize to `image_size` if needed, then pad
        by `pad` and crop back) or "none" (resize the shorter side and center crop, the identity
        when images already have `image_size`).
    flip: mirror left-right with probability 0.5.
    randaugment: (num_ops, magnitude) for RandAugment after crop and flip; None: off.
    erasing: probability of random erasing (timm's per-pixel noise box), last.
    """

    image_size: int
    crop: str = "inception"
    flip: bool = True
    pad: int = 4
    randaugment: tuple[int, int] | None = None
    erasing: float = 0.0

    def __post_init__(self):
        if self.crop not in CROPS:
            raise UserError(f"unknown crop {self.crop!r}: use one of {', '.join(CROPS)}")

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image = example["image"]
        if self.crop == "inception":
            image = transforms.inception_crop(image, self.image_size, rng)
        else:
            image = transforms.resize_center_crop(image, self.image_size, 1.0)
            if self.crop == "pad":
                image = transforms.pad_crop(image, rng, self.pad)
        if self.flip:
            image = transforms.flip(image, rng)
        if self.randaugment:
            num_ops, magnitude = self.randaugment
            image = augment.rand_augment(image, rng, num_ops=num_ops, magnitude=magnitude)
        if self.erasing:
            image = augment.random_erasing(image, rng, probability=self.erasing)
        return {**example, "image": image}


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """The eval preprocessing of one example: `resize_center_crop(image, image_size,
    crop_ratio)`; every other field passes through, and `mask` marks it as real."""

    image_size: int
    crop_ratio: float = 0.875

    def __call__(self, example: dict) -> dict:
        image = transforms.resize_center_crop(example["image"], self.image_size, self.crop_ratio)
        return {**example, "image": image, "mask": True}


@dataclasses.dataclass(frozen=True)
class _Padding:
    """The filler example that completes the last eval batch; masked out of every metric."""

    example: dict  # zeros shaped like a real example

    def __call__(self, _: int) -> dict:
        return {**self.example, "mask": False}


def _zeros_like(example: dict, ragged) -> dict:
    """A filler example: zeros, and no rows in the ragged fields (no boxes)."""
    sizes = dict(ragged)
    return {k: np.asarray(v)[:0] if k in sizes else np.zeros_like(v) for k, v in example.items()}


@dataclasses.dataclass(frozen=True)
class Batcher:
    """Stacks examples into a batch: `image` uint8 [b, H, W, C], `label` int32 [b], ...

    ragged: (field, size) pairs for fields whose length varies per example (boxes of a
    detection target, [n, ...]): each is zero-padded to [b, size, ...] and `<field>_mask`
    [b, size] bool marks the real rows. An example with more than `size` rows is an error.
    Python ints become int32 and bools bool; arrays keep their dtype.
    """

    ragged: tuple[tuple[str, int], ...] = ()

    def __call__(self, examples: Sequence[dict]) -> dict:
        sizes = dict(self.ragged)
        batch = {}
        for key in examples[0]:
            values = [np.asarray(e[key]) for e in examples]
            if key in sizes:
                batch[key], batch[f"{key}_mask"] = pad_ragged(values, sizes[key], key)
                continue
            stacked = np.stack(values)
            if stacked.dtype == np.int64:
                stacked = stacked.astype(np.int32)
            batch[key] = stacked
        return batch


def pad_ragged(values: Sequence[np.ndarray], size: int, name: str = "field"):
    """[n_i, ...] arrays -> ([b, size, ...] zero-padded, [b, size] bool mask of real rows)."""
    longest = max(len(v) for v in values)
    if longest > size:
        raise UserError(
            f"an example has {longest} {name} rows, more than the {size} a batch holds: raise "
            f"the limit for {name}"
        )
    trailing = max((v.shape[1:] for v in values), key=len)
    if any(v.shape[1:] != trailing and len(v) for v in values) or any(v.ndim == 0 for v in values):
        shapes = sorted({str(v.shape) for v in values})
        raise UserError(
            f"{name} rows differ in shape ({', '.join(shapes)}): give every example an array "
            f"[n, {', '.join(map(str, trailing))}] (an empty one for none)"
        )
    dtype = np.result_type(*values) if values else np.float32
    padded = np.zeros((len(values), size, *trailing), dtype)
    mask = np.zeros((len(values), size), bool)
    for i, v in enumerate(values):
        if len(v):  # an empty value may be [0] or [0, ...]
            padded[i, : len(v)] = v
            mask[i, : len(v)] = True
    return padded, mask


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if global_batch_size <= 0:
        raise UserError(f"global_batch_size must be positive, got {global_batch_size}")
    if global_batch_size % process_count:
        raise UserError(
            f"global_batch_size {global_batch_size} is not divisible by the {process_count} "
            "processes: pick a multiple of the process count"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return global_batch_size // process_count


def _iterate(batches: grain.MapDataset, source: Sequence, worker_count: int) -> Iterator[dict]:
    """Iterates `batches` in order, built ahead by threads and optionally by worker processes."""
    num_threads = 0 if isinstance(source, ArraySource) else NUM_THREADS
    ds = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=PREFETCH_BATCHES)
    )
    if worker_count > 0:
        # grain 0.2.x reads an absl flag when it starts workers and fails if the program never
        # parsed flags (plain scripts, pytest): google/grain#1355. Defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        # Each worker builds whole batches (it gets every `worker_count`-th one) and the results
        # are interleaved back in order, so the output does not depend on `worker_count`.
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=2)
        )
    return iter(ds)


def train_batches(
    source: Sequence,
    transform,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    num_steps: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    repeats: int = 1,
) -> Iterator[dict]:
    """Yields this process's share of the augmented training batches from `start_step` on.

    Args:
        source: random access, `[i] -> {"image": uint8 [H, W, C], ...task fields}`.
        transform: `(example, rng) -> example`, e.g. `TrainTransform`; a picklable object with
            an optional `ragged` attribute ((field, size) pairs for `Batcher`). One with a true
            `positional` attribute is called `(example, rng, position=i)`, `i` the example's
            index in the stream (`step * B + row`; what seeds `rng`), e.g. to switch an
            augmentation off for the last epochs.
        global_batch_size: `B`, examples per step over all processes.
        seed: fixes the shuffle of every epoch and every augmentation; in [0, 2**32).
        start_step: first step to yield; batches do not depend on it, only which ones come out.
        num_steps: stop after this many batches; None repeats forever.
        process_index, process_count: this host's place in the job.
        worker_count: processes that build batches (0: threads in this process only).
        repeats: repeated augmentation: each batch holds B / repeats images, each `repeats`
            times with its own augmentation (an epoch then takes `repeats` times the steps).

    Yields:
        The transformed examples stacked by `Batcher`, e.g. `{"image": uint8 [b, S, S, C],
        "label": int32 [b]}` with `b = global_batch_size // process_count`.
    """
    if len(source) == 0:
        raise UserError("the training source is empty: check the dataset and its split")
    local = _local_batch_size(global_batch_size, process_index, process_count)
    if not 0 <= seed < 2**32:
        raise UserError(f"seed must be in [0, 2**32), got {seed}")

    # random_map seeds element i's generator with (seed, i): the augmentation of an example
    # depends on its place in the stream, not on which process or worker reads it.
    if repeats < 1 or global_batch_size % repeats:
        raise UserError(
            f"repeated augmentation needs a batch divisible by repeats={repeats}, got "
            f"{global_batch_size}: choose batch_size as a multiple of repeats"
        )
    epochs = _ShuffledEpochs(source, seed, repeats, global_batch_size)
    if getattr(transform, "positional", False):
        # The same generators as below (random_map seeds by the same index), plus the index.
        stream = epochs.map_with_index(_with_position).random_map(_AtPosition(transform), seed=seed)
    else:
        stream = epochs.random_map(transform, seed=seed)
    # Local batch k holds stream elements [k * local, (k + 1) * local): global step s, process p
    # is local batch s * process_count + p.
    batcher = Batcher(getattr(transform, "ragged", ()))
    batches = stream.batch(local, drop_remainder=True, batch_fn=batcher)
    first = start_step * process_count + process_index
    stop = None if num_steps is None else (start_step + num_steps) * process_count
    return _iterate(batches[first:stop:process_count], source, worker_count)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Eval steps for one pass: `ceil(num_examples / global_batch_size)`, the same on every host."""
    return -(-num_examples // global_batch_size)


def eval_batches(
    source: Sequence,
    transform,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
) -> Iterator[dict]:
    """Yields one in-order pass over `source`, split over processes and padded to full batches.

    Global eval batch `i` is examples `[i * B, (i + 1) * B)`; process `p` reads the `p`-th block
    of `b = B / process_count`. Positions past the end are filler with `mask` False, so every
    process yields `num_eval_batches(len(source), B)` batches and each example is real exactly once.

    Args:
        source: random access, `[i] -> {"image": uint8 [H, W, C], ...task fields}`.
        transform: `example -> example` with `mask` True, e.g. `EvalTransform`.
        global_batch_size: `B`, examples per eval step over all processes.
        process_index, process_count: this host's place in the job.
        worker_count: processes that build batches (0: threads in this process only).

    Yields:
        The transformed examples stacked by `Batcher`, e.g. `{"image": uint8 [b, S, S, C],
        "label": int32 [b], "mask": bool [b]}`.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    num_examples = len(source)
    if num_examples == 0:
        return iter(())
    examples = grain.MapDataset.source(source).map(transform)
    num_padding = num_eval_batches(num_examples, global_batch_size) * global_batch_size
    num_padding -= num_examples
    if num_padding:
        filler = _zeros_like(transform(source[0]), getattr(transform, "ragged", ()))
        padding = grain.MapDataset.range(num_padding).map(_Padding(filler))
        examples = grain.MapDataset.concatenate([examples, padding])
    batches = examples.batch(local, batch_fn=Batcher(getattr(transform, "ragged", ())))
    return _iterate(batches[process_index::process_count], source, worker_count)


def make_global_batch(local_batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Assembles every process's host batch into global arrays split over the data axis.

    Args:
        local_batch: numpy leaves with leading dimension `b` (this process's examples).
        sharding: how the global batch is laid out, e.g. `NamedSharding(mesh, P("data"))`.

    Returns:
        The same tree of `jax.Array`s with leading dimension `b * jax.process_count()`.
    """

    def to_global(x: np.ndarray) -> jax.Array:
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(to_global, local_batch)
