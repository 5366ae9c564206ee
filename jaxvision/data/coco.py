"""COCO-format detection data: your own COCO json tree ("coco_json") or TFDS's "coco/2017".

Items are detection records: `{"image": uint8 [H, W, 3], "boxes": float32 [N, 4] (x1, y1, x2,
y2) pixels, "classes": int32 [N] in 1..K-1, "iscrowd": int32 [N], "area": float32 [N],
"image_id": int}`; crowd annotations stay in (iscrowd 1: the evaluator needs them, the training
transform drops them) and images without annotations are valid records with N = 0.

"coco_json" (your own COCO-format tree) is read by jaxvision.data.coco_json.

"coco/2017" (also "coco/2014", "coco/2017:1.1.0") reads TFDS's prepared array_record copy,
without TensorFlow: TFDS's labels 0..79 become COCO's category ids 1..90 (`COCO_IDS`), its
normalised (ymin, xmin, ymax, xmax) boxes become pixels, boxes of zero area are dropped (as
torchvision's COCO reference does) and `image_id` is COCO's, so detections map onto the
official annotations.

Both take one dataset option, `labels`: "ids" (the default) keeps COCO's category ids as labels
(91 classes with the unused ids, as torchvision's detectors have them); "contiguous" numbers the
categories 1..K in id order (81 classes for COCO's 80: the YOLO reference's classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxvision.data import tfds_sources
from jaxvision.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, DatasetRequest
from jaxvision.errors import UserError

# COCO's 91 category ids (0 = background) as torchvision's detection models name them: the 10 ids
# COCO never used are "N/A".
COCO_CATEGORY_NAMES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A",
    "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A",
    "toilet", "N/A", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "N/A", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
# TFDS label k (categories in id order) -> COCO category id: the standard 80 -> 91 mapping.
COCO_IDS = np.array(
    [i for i, name in enumerate(COCO_CATEGORY_NAMES) if i and name != "N/A"], np.int32
)


LABELS = ("ids", "contiguous")


def contiguous_labels(request: DatasetRequest) -> bool:
    """Whether a COCO opener's options ask for labels 1..K ("contiguous") rather than the
    category ids ("ids"); any other option is an error."""
    unknown = sorted(set(request.options) - {"labels"})
    labels = request.options.get("labels", "ids")
    if unknown or labels not in LABELS:
        got = ", ".join(f"{k}={v!r}" for k, v in request.options.items())
        raise UserError(
            f"dataset {request.name!r} takes one option, labels='ids' (COCO's category ids, "
            f"91 classes) or 'contiguous' (1..K, e.g. YOLO's 80 + background), got {got}"
        )
    return labels == "contiguous"


class TfdsCocoSource(Sequence):
    """TFDS coco records as detection records: labels 0..79 -> COCO ids (or 1..80 with
    `contiguous`), boxes in pixels."""

    def __init__(self, data_source: Sequence, contiguous: bool = False):
        self.data_source = data_source
        self.classes = np.arange(1, len(COCO_IDS) + 1, dtype=np.int32) if contiguous else COCO_IDS

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> dict:
        return tfds_record(self.data_source[index], index, self.classes)


def tfds_record(example: dict, index: int, classes: np.ndarray = COCO_IDS) -> dict:
    """One TFDS coco example (`image`, `image/id`, `objects`: `bbox` float [n, 4] normalised
    (ymin, xmin, ymax, xmax), `label` [n] in 0..79, `is_crowd` [n], `area` [n]) as a record;
    `classes[label]` is its class."""
    image = np.asarray(example["image"], np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:  # TFDS decodes COCO's few grey JPEGs as RGB; be safe
        image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    height, width = image.shape[:2]
    objects = example["objects"]
    bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    boxes = bbox[:, [1, 0, 3, 2]] * np.array([width, height, width, height], np.float32)
    boxes = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    labels = np.asarray(objects["label"], np.int64).reshape(-1)
    crowd = np.asarray(objects["is_crowd"]).reshape(-1).astype(np.int32)
    if "area" in objects:
        area = np.asarray(objects["area"], np.float32).reshape(-1)
    else:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return {
        "image": image,
        "boxes": boxes[keep],
        "classes": classes[labels[keep]],
        "iscrowd": crowd[keep],
        "area": area[keep],
        "image_id": int(example.get("image/id", index)),
    }


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("coco/2017", ...) and the like: TFDS's coco."""
    return open_tfds_coco(
        request.name,
        request.data_dir,
        request.train_split,
        request.test_split,
        contiguous=contiguous_labels(request),
    )


def open_tfds_coco(
    name: str,
    data_dir: str | None,
    train_split: str,
    test_split: str | None,
    contiguous: bool = False,
) -> Dataset:
    """TFDS's coco (see the module docstring): 91 classes, COCO's category ids, or 81 with
    `contiguous`."""
    builder = tfds_sources.tfds_builder(name, data_dir)
    try:
        objects = builder.info.features["objects"]
        num_labels = objects["label"].num_classes
        objects["bbox"]  # noqa: B018 (present, or the KeyError below)
    except (KeyError, AttributeError):
        raise UserError(
            f"dataset {name!r} has no 'objects' with boxes and labels: use coco/2017 or "
            "coco/2014 (the panoptic configs are not detection data)"
        ) from None
    if num_labels != len(COCO_IDS):
        raise UserError(
            f"dataset {name!r} has {num_labels} labels, but coco's detection configs have 80: "
            "use coco/2017 or coco/2014"
        )
    if test_split is None:
        test_split = "validation"
    split_sources = tfds_sources.tfds_split_sources(builder, name, (train_split, test_split))
    names = COCO_CATEGORY_NAMES
    if contiguous:
        names = ("__background__", *(COCO_CATEGORY_NAMES[i] for i in COCO_IDS))
    return Dataset(
        train=TfdsCocoSource(split_sources[train_split], contiguous),
        test=TfdsCocoSource(split_sources[test_split], contiguous),
        num_classes=len(names),
        class_names=names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=None,
    )
