"""TFDS datasets prepared in array_record format, read by random access: the builder (never a
download), split sources, and classification sets ("cifar10", "imagenet2012", ...)."""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Sequence

import numpy as np

from jaxvision.data.dataset import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, Dataset
from jaxvision.errors import UserError


class NotInTfds(UserError):
    """A dataset name that TFDS does not know either (open_dataset says what to use)."""


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
        raise NotInTfds(f"unknown dataset {name!r}") from None
    except ModuleNotFoundError:
        # The builder's code needs TensorFlow (coco's does) to describe the dataset; a prepared
        # copy describes itself in its files, which TFDS reads without it.
        return _tfds_builder_from_files(name, data_dir)
    except (ValueError, AssertionError) as e:  # e.g. an unknown version or config
        raise UserError(f"cannot open TFDS dataset {name!r}: {first_line(e)}") from None

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
                f"cannot open split {split!r} of {name!r}: {first_line(e)}; "
                f"available splits: {', '.join(builder.info.splits) or 'unknown'}"
            ) from None
    return sources


def open_tfds(name: str, data_dir: str | None, train_split: str, test_split: str | None):
    """A TFDS image classification set ("image" and a ClassLabel "label")."""
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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
