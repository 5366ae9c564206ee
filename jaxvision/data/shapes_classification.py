"""The shapes as a classification set whose object's place is known: one shape per image.

Each image holds exactly one of the five shapes of `jaxvision.data.shapes` (circle/ellipse,
rectangle, triangle, star, cross), drawn as that set draws them: stretched, rotated, from about
20 pixels to 3/5 of the side, sometimes cut by the border (at most 15%), in a colour apart from
a textured background with clutter lines and pixel noise. The label is the shape's kind, and
each record also carries the shape's box (the bounds of its visible pixels), so a heat map can
be checked against where the object is (`jaxvision.explain.checks.pointing_game`).

Labels cycle through the classes (item i has label i mod 5): both splits are balanced and the
labels are known without drawing. Item i of a split is drawn from (seed, split, i, label), the
same wherever it is built; at 64 x 64 the box covers 26% of the image on average (5-95%:
13-45%).
"""

from __future__ import annotations

import numpy as np

from jaxvision.data import shapes
from jaxvision.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, DatasetRequest
from jaxvision.errors import UserError

CLASS_NAMES = shapes.CLASS_NAMES[1:]  # no background class: every image shows one shape
OPTIONS = ("image_size", "num_train", "num_test", "seed")


def open_shapes_classification(
    image_size: int = 64, num_train: int = 10000, num_test: int = 500, seed: int = 0
) -> Dataset:
    """The one-shape set (see the module docstring); nothing is drawn until an item is read.

    Args:
        image_size: side of the square images, at least 32.
        num_train, num_test: images per split.
        seed: fixes every image; two seeds give unrelated sets.
    """
    if int(image_size) < 32:
        raise UserError(f"shapes_classification image_size must be at least 32, got {image_size}")
    if int(num_train) < 1 or int(num_test) < 1:
        raise UserError(
            f"shapes_classification needs num_train and num_test >= 1, got {num_train}, {num_test}"
        )
    kwargs = dict(image_size=int(image_size), seed=int(seed))
    return Dataset(
        train=SingleShapeSource("train", int(num_train), **kwargs),
        test=SingleShapeSource("test", int(num_test), **kwargs),
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=int(image_size),
        max_boxes=1,
    )


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("shapes_classification", options=...): `open_shapes_classification`'s
    arguments."""
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for 'shapes_classification': use "
            f"{', '.join(OPTIONS)}"
        )
    return open_shapes_classification(**request.options)


class SingleShapeSource(shapes.ShapesSource):
    """One split: item `i` is `{"image": uint8 [S, S, 3], "label": i mod 5 (CLASS_NAMES),
    "boxes": float32 [1, 4] xyxy pixels}`, drawn on access and kept (as `ShapesSource`)."""

    def __init__(self, split: str, length: int, *, image_size: int, seed: int):
        super().__init__(split, length, image_size=image_size, max_objects=1, seed=seed)

    @property
    def labels(self) -> np.ndarray:
        """int64 [N]: every item's label, without drawing any."""
        return np.arange(self.length) % len(CLASS_NAMES)

    def draw(self, index: int) -> dict:
        label = index % len(CLASS_NAMES)
        image, box, _ = shapes.render_single(
            self.seed, shapes.SPLITS[self.split], index, self.image_size, label + 1
        )
        return {"image": image, "label": label, "boxes": box[None]}
