"""Datasets as random-access sources: `open_dataset(name)` -> train/test sequences plus metadata.

Every source is a `Sequence` whose items are `{"image": uint8 [H, W, C], "label": int}` for
classification, or detection records `{"image", "boxes", "classes", "iscrowd", "area",
"image_id"}` (see `jaxvision.data.coco`), so the input pipeline can address any element by index
(needed for exact resume and per-element seeds).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
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
    strict: bool = False,
    options: Mapping[str, object] | None = None,
) -> Dataset:
    """Opens a dataset by name without decoding its images.

    Args:
        name: "digits" (scikit-learn's 1,797 8x8 digits), "folder" (images under
            `data_dir/<class>/*.{jpg,jpeg,png}`) or a TFDS name such as "imagenet2012",
            "cifar10", "mnist" or "imagenet2012:5.1.0" (prepared in array_record format).
            Detection (records with boxes): "shapes" (synthetic, generated on access, see
            `jaxvision.data.shapes`), "coco_json" (a COCO-format tree at `data_dir`) and
            "coco/2017" or "coco/2017:1.1.0" (TFDS), see `jaxvision.data.coco` and `.coco_json`.
        data_dir: the image root for "folder"; the TFDS data dir for TFDS names (default:
            `$TFDS_DATA_DIR`, else TFDS's default).
        train_split: TFDS split for training; for "folder" with a `train/` + `val/` layout, the
            name of the training sub-folder.
        test_split: TFDS split for testing (default: "validation" if the dataset has it, else
            "test"); for "folder", the held-out sub-folder (default: val, validation or test).
        test_fraction: share of each class held out for testing when the dataset has no test
            split of its own (digits, single-level folders).
        split_seed: seed of that held-out split.
        strict: for "folder" and "coco_json", stop at the first unreadable file instead of
            leaving the unreadable ones out (`Dataset.skipped` lists them).
        options: settings only one dataset has: for "shapes", `image_size`, `num_train`,
            `num_test`, `max_objects`, `seed` (see `shapes.open_shapes`). Others take none.

    Raises:
        UserError: the dataset is unknown, missing, not prepared or malformed.
    """
    options = dict(options or {})
    if options and name != "shapes":
        raise UserError(
            f"dataset {name!r} takes no options (got {', '.join(sorted(options))}): only "
            "'shapes' has any; drop them"
        )
    if name == "shapes":
        from jaxvision.data import shapes

        return shapes.open_shapes(**_shape_options(options))
    if name == "coco_json":
        from jaxvision.data import coco_json

        return coco_json.open_coco_json(
            data_dir, train_split, test_split, test_fraction, split_seed, strict=strict
        )
    if name.split(":")[0].split("/")[0] == "coco":
        from jaxvision.data import coco

        return coco.open_tfds_coco(name, data_dir, train_split, test_split)
    if name == "digits":
        if test_split is not None:
            raise UserError(
                f"test_split={test_split!r}: the digits hold out test_fraction of each class "
                "instead of naming a split; drop test_split"
            )
        return _open_digits(test_fraction, split_seed)
    if name == "folder":
        from jaxvision.data import folder

        return folder.open_folder(
            data_dir, train_split, test_split, test_fraction, split_seed, strict=strict
        )
    return _open_tfds(name, data_dir, train_split, test_split)


def _shape_options(options: dict) -> dict:
    from jaxvision.data import shapes

    unknown = sorted(set(options) - set(shapes.OPTIONS))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for 'shapes': use {', '.join(shapes.OPTIONS)}"
        )
    return options


def check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")


def _open_digits(test_fraction: float, split_seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_fraction(test_fraction)
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


def tfds_builder(name: str, data_dir: str | None):
    """The TFDS builder of a dataset prepared in array_record format, or a UserError that says
    how to prepare it. Never downloads: a missing ImageNet must fail fast, not start one."""
    # Imported here: TFDS takes ~0.5 s to import and only TFDS names need it.
    import tensorflow_datasets as tfds

    # TFDS reads $TFDS_DATA_DIR once at import; read it here so later changes are honoured.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"unknown dataset {name!r}: use 'digits', 'folder' (with data_dir=<root>/<class>/"
            "*.jpg), 'shapes', 'coco_json' (with data_dir=<COCO-format root>) or a TFDS name "
            "such as imagenet2012, cifar10, mnist, coco/2017"
        ) from None
    except ModuleNotFoundError:
        # The builder's code needs TensorFlow (coco's does) to describe the dataset; a prepared
        # copy describes itself in its files, which TFDS reads without it.
        return _tfds_builder_from_files(name, data_dir)
    except (ValueError, AssertionError) as e:  # e.g. an unknown version or config
        raise UserError(f"cannot open TFDS dataset {name!r}: {_first_line(e)}") from None

    root = builder.data_dir_root
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
            f"{manual}{_build_hint(name, root)}"
        )
    _check_array_record(builder, name, root)
    return builder


def _build_hint(name: str, root: str) -> str:
    return (
        f"run `tfds build {name} --data_dir={root} --file_format=array_record` "
        "(building needs TensorFlow: pip install -e '.[tfds-build]')"
    )


def _tfds_builder_from_files(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    root = data_dir or tfds.core.constants.DATA_DIR
    try:
        builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"dataset {name!r} is not prepared in {root}: {_build_hint(name, root)}"
        ) from None
    _check_array_record(builder, name, builder.data_dir_root)
    return builder


def _check_array_record(builder, name: str, root: str) -> None:
    import tensorflow_datasets as tfds

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


def tfds_split_sources(builder, name: str, splits: Sequence[str], decoders=None) -> dict:
    """{split: the builder's array_record data source}; UserError for a bad split name."""
    sources = {}
    for split in splits:
        try:
            sources[split] = builder.as_data_source(split=split, decoders=decoders)
        except (ValueError, KeyError) as e:  # unknown split or bad slicing syntax
            raise UserError(
                f"cannot open split {split!r} of {name!r}: {_first_line(e)}; "
                f"available splits: {', '.join(builder.info.splits) or 'unknown'}"
            ) from None
    return sources


def _open_tfds(name: str, data_dir: str | None, train_split: str, test_split: str | None):
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise UserError(
            f"dataset {name!r} has features {sorted(features)}, but jaxvision needs 'image' and "
            "'label': pick an image classification dataset"
        )
    if test_split is None:
        test_split = "validation" if "validation" in builder.info.splits else "test"
    splits = (train_split, test_split)
    decoded = tfds_split_sources(builder, name, splits)
    encoded = tfds_split_sources(builder, name, splits, {"image": tfds.decode.SkipDecoding()})
    sources = {split: TfdsSource(decoded[split], encoded[split]) for split in splits}

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
