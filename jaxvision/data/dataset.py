"""What every dataset opener returns (`Dataset`) and what the openers share: the in-memory
source, the normalisation statistics, the request `open_dataset` hands an opener."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jaxvision.errors import UserError

# Per-channel statistics in 0..255 units; normalisation happens on device.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# For 1-channel TFDS sets we map 0..255 to -1..1 instead of estimating statistics: it costs no
# reads and any reasonable normalisation trains these small sets equally well.
GRAY_MEAN = (127.5,)
GRAY_STD = (127.5,)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset's train and test sources and what the model and pipeline need to know about it.

    Attributes:
        train: random access, `len()`, `[i] -> {"image": uint8 [H, W, C], "label": int}`.
        test: same as `train`.
        num_classes: labels are in `[0, num_classes)`.
        class_names: `num_classes` names, indexed by label.
        mean: per-channel pixel mean in 0..255 units, `C` entries.
        std: per-channel pixel standard deviation in 0..255 units, `C` entries.
        image_size: natural side length for fixed-size sets (digits 8, cifar 32); None if images
            vary in size.
        skipped: files left out because they cannot be read, one "path (why)" each.
        notes: what opening the data changed or found, one line each, for the run to report
            (detection sets: boxes clipped or dropped, images without annotations, ...).
        max_boxes: detection sets: the most boxes (crowd ones included) of any one image, when
            it is known without reading every record; None otherwise.
    """

    train: Sequence
    test: Sequence
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    max_boxes: int | None = None


class ArraySource(Sequence):
    """In-memory examples: `images` uint8 [N, H, W, C], `labels` int [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": int(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class DatasetRequest:
    """What `jaxvision.data.open_dataset` was asked for (its arguments, see there): what a
    registered opener (`jaxvision.data.sources.DATASETS`) reads."""

    name: str
    data_dir: str | None = None
    train_split: str = "train"
    test_split: str | None = None
    test_fraction: float = 0.2
    split_seed: int = 0
    strict: bool = False
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)


def check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
