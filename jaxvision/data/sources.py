"""Datasets as random-access sources: `open_dataset(name)` -> train/test sequences plus metadata.

Every source is a `Sequence` whose items are `{"image": uint8 [H, W, C], "label": int}` for
classification, or detection records `{"image", "boxes", "classes", "iscrowd", "area",
"image_id"}` (see `jaxvision.data.coco`), so the input pipeline can address any element by index
(needed for exact resume and per-element seeds).

Datasets are found by name in `DATASETS` (name -> opener(DatasetRequest) -> Dataset, imported
on first use); a name it lacks is a TFDS name. A new dataset registers its opener:
`DATASETS.register("my_set", open_my_set)` (with `takes_options=True` if it reads `options`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxvision.data.dataset import (  # noqa: F401 (the names callers import from here)
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ArraySource,
    Dataset,
    DatasetRequest,
    check_fraction,
)
from jaxvision.errors import UserError
from jaxvision.registry import Registry

# name -> opener(DatasetRequest) -> Dataset. `hint`: what the name needs, for the error that
# lists them; `takes_options`: whether it reads `options` (True: any, checked by the opener; a
# tuple: those names); `versions`: it also opens
# "<name>/<config>:<version>" (TFDS's "coco/2017:1.1.0").
DATASETS = Registry("dataset")
DATASETS.declare("digits", "jaxvision.data.sources:open_digits")
DATASETS.declare(
    "folder", "jaxvision.data.folder:open_request", hint="data_dir=<root>/<class>/*.jpg"
)
DATASETS.declare("shapes", "jaxvision.data.shapes:open_request", takes_options=True)
DATASETS.declare(
    "shapes_classification",
    "jaxvision.data.shapes_classification:open_request",
    takes_options=True,
)
DATASETS.declare(
    "shapes_captions", "jaxvision.data.shapes_captions:open_request", takes_options=True
)
DATASETS.declare(
    "captions",
    "jaxvision.data.caption_folder:open_request",
    hint="data_dir=<root>/captions.jsonl",
    takes_options=("tokenizer", "tokenizer_path", "text_length"),
)
DATASETS.declare(
    "coco_json",
    "jaxvision.data.coco_json:open_request",
    hint="data_dir=<COCO-format root>",
    takes_options=("labels",),
)
DATASETS.declare(
    "coco", "jaxvision.data.coco:open_request", versions=True, takes_options=("labels",)
)


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
            "shapes_classification": one shape per image, labelled by its kind, its box in the
            record (see `jaxvision.data.shapes_classification`).
            Image–text (records with `text` and `tokens`): "shapes_captions" (synthetic shapes
            with captions, see `jaxvision.data.shapes_captions`) and "captions" (a folder with
            captions.jsonl or COCO captions JSON at `data_dir`, see
            `jaxvision.data.caption_folder`).
        data_dir: the image root for "folder"; the TFDS data dir for TFDS names (default:
            `$TFDS_DATA_DIR`, else TFDS's default).
        train_split: TFDS split for training; for "folder" with a `train/` + `val/` layout, the
            name of the training sub-folder.
        test_split: TFDS split for testing (default: "validation" if the dataset has it, else
            "test"); for "folder", the held-out sub-folder (default: val, validation or test).
        test_fraction: share of each class held out for testing when the dataset has no test
            split of its own (digits, single-level folders).
        split_seed: seed of that held-out split.
        strict: for "folder", "captions" and "coco_json", stop at the first unreadable file
            instead of leaving the unreadable ones out (`Dataset.skipped` lists them).
        options: settings only some datasets have: for "shapes", `image_size`, `num_train`,
            `num_test`, `max_objects`, `seed` (see `shapes.open_shapes`); for
            "shapes_classification" the same but `max_objects`; for "shapes_captions" see
            `shapes_captions.open_shapes_captions`; for "captions" `tokenizer`,
            `tokenizer_path`, `text_length`. Others take none.

    Raises:
        UserError: the dataset is unknown, missing, not prepared or malformed.
    """
    request = DatasetRequest(
        name,
        data_dir,
        train_split,
        test_split,
        test_fraction,
        split_seed,
        strict,
        dict(options or {}),
    )
    base = name.split(":")[0].split("/")[0]  # "coco/2017:1.1.0" -> "coco"
    versioned = base in DATASETS and DATASETS.info(base).get("versions")
    key = name if name in DATASETS else base if versioned else None
    if request.options and not takes_options(name):
        having = [f"'{n}'" for n in DATASETS.names() if DATASETS.info(n).get("takes_options")]
        raise UserError(
            f"dataset {name!r} takes no options (got {', '.join(sorted(request.options))}): "
            f"drop them (the datasets with options: {', '.join(having) or 'none'})"
        )
    from jaxvision.data import tfds_sources

    try:
        if key is not None:
            return DATASETS[key](request)
        return tfds_sources.open_tfds(name, data_dir, train_split, test_split)
    except tfds_sources.NotInTfds:
        raise _unknown(name) from None


def takes_options(name: str) -> bool:
    """Whether the dataset `name` reads `open_dataset`'s `options` (its opener says so)."""
    return bool(_option_names(name))


def _option_names(name: str):
    base = name.split(":")[0].split("/")[0]
    key = name if name in DATASETS else base
    return DATASETS.info(key).get("takes_options") if key in DATASETS else None


def usable_options(name: str, options: dict) -> tuple[dict, str | None]:
    """(the `options` that dataset `name` reads, a note naming those it does not): a config
    written for one dataset (the shapes recipe's num_train) run on another keeps working."""
    names = _option_names(name)
    if names is True or not options:
        return dict(options), None
    kept = {k: v for k, v in options.items() if k in (names or ())}
    dropped = ", ".join(k for k in options if k not in kept)
    if not dropped:
        return kept, None
    what = f"reads only {', '.join(names)}" if names else "takes no options"
    return kept, f"dataset {name} {what}: {dropped} ignored"


def _unknown(name: str) -> UserError:
    """The one-line error for a name neither registered nor known to TFDS."""
    named = [n for n in DATASETS.names() if not DATASETS.info(n).get("versions")]
    hints = [
        f"'{n}'" + (f" (with {h})" if (h := DATASETS.info(n).get("hint")) else "") for n in named
    ]
    message = (
        f"unknown dataset {name!r}: use {', '.join(hints)} or a TFDS name such as imagenet2012, "
        "cifar10, mnist, coco/2017"
    )
    close = DATASETS.closest(name)
    return UserError(message + (f" (did you mean {close!r}?)" if close else ""))


def open_digits(request: DatasetRequest) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, `test_fraction` of each class held out."""
    if request.test_split is not None:
        raise UserError(
            f"test_split={request.test_split!r}: the digits hold out test_fraction of each class "
            "instead of naming a split; drop test_split"
        )
    return _open_digits(request.test_fraction, request.split_seed)


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
