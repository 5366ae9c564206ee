"""Datasets as random-access sources: `open_dataset(name)` -> train/test sequences plus metadata.

Every source is a `Sequence` whose items are `{"image": uint8 [H, W, C], "label": int}`, so the
input pipeline can address any element by index (needed for exact resume and per-element seeds).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxvision.errors import UserError

# Per-channel statistics in 0..255 units; normalisation happens on device.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# For 1-channel TFDS sets we map 0..255 to -1..1 instead of estimating statistics: it costs no
# reads and any reasonable normalisation trains these small sets equally well.
GRAY_MEAN = (127.5,)
GRAY_STD = (127.5,)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Held-out folder names for a `root/train` + `root/<val>` layout, in order of preference.
FOLDER_TEST_SPLITS = ("val", "validation", "test")


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
    """

    train: Sequence
    test: Sequence
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None


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


class ImageFileSource(Sequence):
    """Image files decoded with PIL on access: items are RGB `uint8 [H, W, 3]`."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int]):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = tuple(str(p) for p in paths)
        self.labels = tuple(int(label) for label in labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        with Image.open(self.paths[index]) as image:
            # Grayscale, palette and RGBA files all become 3 channels so batches stack.
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return {"image": array, "label": self.labels[index]}


class TfdsSource(Sequence):
    """A TFDS array_record data source with items reduced to `{"image", "label"}`.

    `label_source`: the same records with images left encoded (TFDS's SkipDecoding), read for
    `labels` (class weights) so that counting labels never decodes an image.
    """

    def __init__(self, data_source: Sequence, label_source: Sequence | None = None):
        self.data_source = data_source
        self.label_source = label_source if label_source is not None else data_source

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """int64 [N], every example's label, read in parallel chunks of records."""
        chunks = [range(i, min(i + 4096, len(self))) for i in range(0, len(self), 4096)]

        def read(chunk):
            return [int(r["label"]) for r in self.label_source.__getitems__(list(chunk))]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return np.asarray([x for part in pool.map(read, chunks) for x in part], np.int64)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> dict:
        example = self.data_source[index]
        image = np.asarray(example["image"], dtype=np.uint8)
        if image.ndim == 2:
            image = image[:, :, None]
        return {"image": image, "label": int(example["label"])}


def open_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Dataset:
    """Opens a dataset by name without reading its images.

    Args:
        name: "digits" (scikit-learn's 1,797 8x8 digits), "folder" (images under
            `data_dir/<class>/*.{jpg,jpeg,png}`) or a TFDS name such as "imagenet2012",
            "cifar10", "mnist" or "imagenet2012:5.1.0" (prepared in array_record format).
        data_dir: the image root for "folder"; the TFDS data dir for TFDS names (default:
            `$TFDS_DATA_DIR`, else TFDS's default).
        train_split: TFDS split for training; for "folder" with a `train/` + `val/` layout, the
            name of the training sub-folder.
        test_split: TFDS split for testing (default: "validation" if the dataset has it, else
            "test"); for "folder", the held-out sub-folder (default: val, validation or test).
        test_fraction: share of each class held out for testing when the dataset has no test
            split of its own (digits, single-level folders).
        split_seed: seed of that held-out split.

    Raises:
        UserError: the dataset is unknown, missing, not prepared or malformed.
    """
    if name == "digits":
        return _open_digits(test_fraction, split_seed)
    if name == "folder":
        return _open_folder(data_dir, train_split, test_split, test_fraction, split_seed)
    return _open_tfds(name, data_dir, train_split, test_split)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")


def _open_digits(test_fraction: float, split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction(test_fraction)
    digits = load_digits()
    # Pixel values are 0..16; rescale to the 0..255 range every other source uses.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, :, :, None]
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=test_fraction,
        stratify=labels,
        random_state=split_seed,
    )
    # Sorted so that each split keeps the dataset's order (evaluation reads in order).
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_images = images[train_idx]
    return Dataset(
        train=ArraySource(train_images, labels[train_idx]),
        test=ArraySource(images[test_idx], labels[test_idx]),
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        mean=(float(train_images.mean()),),
        std=(float(train_images.std()),),
        image_size=8,
    )


def _class_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    dirs = (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(dirs, key=lambda p: p.name)


def _image_files(class_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        (p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def _list_classes(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Maps each class folder name under `root` (sorted) to its sorted image files."""
    class_dirs = _class_dirs(root)
    if not class_dirs:
        raise UserError(
            f"no class folders in {root}: lay images out as {root}/<class>/*.jpg "
            "(one sub-folder per class)"
        )
    files = {d.name: _image_files(d) for d in class_dirs}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        shown = ", ".join(str(root / name) for name in empty[:3])
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        raise UserError(
            f"class folder(s) with no .jpg/.jpeg/.png images: {shown}{more}; "
            "add images or remove the folder(s)"
        )
    return files


def _folder_split_dirs(
    root: pathlib.Path, train_split: str, test_split: str | None
) -> tuple[pathlib.Path, pathlib.Path] | None:
    """Returns (train, test) folders if `root` has a split layout, e.g. train/ and val/."""

    def has_classes(path: pathlib.Path) -> bool:
        return path.is_dir() and bool(_class_dirs(path))

    train_dir = root / train_split
    test_names = (test_split,) if test_split is not None else FOLDER_TEST_SPLITS
    test_dirs = [root / n for n in test_names if has_classes(root / n)]
    if has_classes(train_dir) and test_dirs:
        return train_dir, test_dirs[0]
    if test_split is not None:
        raise UserError(
            f"test_split={test_split!r} needs {train_dir} and {root / test_split} to both hold "
            "class folders; drop test_split to split the classes under the root instead"
        )
    return None


def _open_folder(
    data_dir: str | None,
    train_split: str,
    test_split: str | None,
    test_fraction: float,
    split_seed: int,
) -> Dataset:
    if data_dir is None:
        raise UserError(
            "dataset 'folder' needs data_dir=<root> with images in <root>/<class>/*.jpg"
        )
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise UserError(
            f"data_dir {root} {what}: point it at a folder laid out as <root>/<class>/*.jpg"
        )

    split_dirs = _folder_split_dirs(root, train_split, test_split)
    if split_dirs is not None:
        train_files = _list_classes(split_dirs[0])
        test_files = _list_classes(split_dirs[1])
        class_names = tuple(train_files)
        unknown = sorted(set(test_files) - set(train_files))
        if unknown:
            raise UserError(
                f"{split_dirs[1]} has classes not in {split_dirs[0]}: {', '.join(unknown[:5])}; "
                "every held-out class needs a training folder of the same name"
            )
        index = {name: i for i, name in enumerate(class_names)}
        train = _file_source((p, index[c]) for c, paths in train_files.items() for p in paths)
        test = _file_source((p, index[c]) for c, paths in test_files.items() for p in paths)
    else:
        _check_fraction(test_fraction)
        files = _list_classes(root)
        class_names = tuple(files)
        train_pairs, test_pairs = [], []
        for label, paths in enumerate(files.values()):
            # One generator per class, keyed by (seed, label): a class's split does not change
            # when other classes are added or removed.
            order = np.random.default_rng([split_seed, label]).permutation(len(paths))
            num_test = min(max(1, round(len(paths) * test_fraction)), len(paths) - 1)
            test_pos = set(order[:num_test].tolist())
            for i, path in enumerate(paths):
                (test_pairs if i in test_pos else train_pairs).append((path, label))
        train, test = _file_source(train_pairs), _file_source(test_pairs)

    return Dataset(
        train=train,
        test=test,
        num_classes=len(class_names),
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=None,
    )


def _file_source(pairs) -> ImageFileSource:
    pairs = list(pairs)
    return ImageFileSource([p for p, _ in pairs], [label for _, label in pairs])


def _open_tfds(name: str, data_dir: str | None, train_split: str, test_split: str | None):
    # Imported here: TFDS takes ~0.5 s to import and only TFDS names need it.
    import tensorflow_datasets as tfds

    # TFDS reads $TFDS_DATA_DIR once at import; read it here so later changes are honoured.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"unknown dataset {name!r}: use 'digits', 'folder' (with data_dir=<root>/<class>/*.jpg)"
            " or a TFDS name such as imagenet2012, cifar10, mnist"
        ) from None
    except (ValueError, AssertionError) as e:  # e.g. an unknown version or config
        raise UserError(f"cannot open TFDS dataset {name!r}: {_first_line(e)}") from None

    root = builder.data_dir_root
    # Never call download_and_prepare: a missing ImageNet must fail fast, not start a download.
    if not builder.is_prepared():
        base = name.split(":")[0].split("/")[0]
        manual = ""
        if base == "imagenet2012":
            manual = (
                f"place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                f"{root}/downloads/manual, then "
            )
        elif getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            manual = (
                f"place its source files in {root}/downloads/manual (see the TFDS catalog), then "
            )
        raise UserError(
            f"dataset {name!r} is not prepared in {root} (looked for {builder.data_dir}): "
            f"{manual}run `tfds build {name} --data_dir={root} --file_format=array_record` "
            f"(building needs TensorFlow: pip install -e '.[tfds-build]')"
        )

    formats = [builder.info.file_format, *builder.info.alternative_file_formats]
    if tfds.core.FileFormat.ARRAY_RECORD not in formats:
        stored = builder.info.file_format.value if builder.info.file_format else "tfrecord"
        raise UserError(
            f"dataset {name!r} in {builder.data_dir} is stored as {stored}, but random access "
            f"needs array_record: run `tfds convert_format --dataset_version_dir={builder.data_dir}"
            f" --out_file_format=array_record` or rebuild with `tfds build {name} "
            f"--data_dir={root} --file_format=array_record` (both need TensorFlow: "
            "pip install -e '.[tfds-build]')"
        )

    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UserError(
            f"dataset {name!r} has features {sorted(features)}, but jaxvision needs 'image' and "
            "'label': pick an image classification dataset"
        )
    if test_split is None:
        test_split = "validation" if "validation" in builder.info.splits else "test"
    sources = {}
    for split in (train_split, test_split):
        try:
            sources[split] = TfdsSource(
                builder.as_data_source(split=split),
                builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()}),
            )
        except (ValueError, KeyError) as e:  # unknown split or bad slicing syntax
            raise UserError(
                f"cannot open split {split!r} of {name!r}: {_first_line(e)}; "
                f"available splits: {', '.join(builder.info.splits) or 'unknown'}"
            ) from None

    label = features["label"]
    if not isinstance(label, tfds.features.ClassLabel):
        raise UserError(
            f"dataset {name!r} has a {type(label).__name__} 'label', but jaxvision needs a "
            "ClassLabel: pick an image classification dataset"
        )
    shape = features["image"].shape
    channels = shape[-1]
    fixed = shape[0] is not None and shape[0] == shape[1]
    return Dataset(
        train=sources[train_split],
        test=sources[test_split],
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        mean=GRAY_MEAN if channels == 1 else IMAGENET_MEAN,
        std=GRAY_STD if channels == 1 else IMAGENET_STD,
        image_size=shape[0] if fixed else None,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
