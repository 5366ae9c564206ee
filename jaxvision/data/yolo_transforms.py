"""YOLO's input: the Ultralytics training augmentation and its letterbox, boxes moved with pixels.

Records are the detection records of `detection_transforms` (`image` uint8 [H, W, 3], `boxes`
float32 [N, 4] xyxy pixels, `classes`, `iscrowd`, `area` [N]). The semantics and defaults are
the reference's (Ultralytics 8.4 `v8_transforms` with `cfg/default.yaml`); the code is ours.

Training (`YOLOTrainTransform`), per example, in this order:

1. load: crowd boxes dropped; the image resized so that its longer side is the canvas side S
   (the shorter side `min(ceil(side * S / long), S)`), boxes scaled by the exact per-axis
   factors;
2. mosaic (probability `mosaic`, 1.0): the example and 3 others drawn uniformly from the source
   on a 2S x 2S canvas filled with 114, around a centre (xc, yc) uniform in [S/2, 3S/2): the
   example's bottom-right corner at the centre, the second image's bottom-left, the third's
   top-right, the fourth's top-left, each cut by the canvas. Boxes are shifted, clipped to the
   canvas, and those left without area dropped;
3. random affine onto S x S: about the input's centre, rotate by +-`degrees`, scale by
   1 +- `scale`, shear by +-`shear` degrees, (optionally) perspective, then put that centre at
   (0.5 +- `translate`) * S; border 114. Mosaic's 2S canvas is cropped back to S this way (the
   reference's `border = -S/2`). Boxes: the four corners transformed, their bounds, clipped to
   the canvas, then filtered by `box_candidates` against the input box times the scale;
4. HSV: hue shifted by +-`hsv[0]` of the colour circle, saturation and value multiplied by
   1 +- `hsv[1]`, 1 +- `hsv[2]` (per image; zero saturation stays zero, so greys stay grey);
5. flips: up-down with p `flipud` (0), left-right with p `fliplr` (0.5).

Evaluation (`YOLOEvalTransform`): the reference's validation input: load (1.) then `letterbox`,
a centred pad to S x S with 114 (no resize left to do at that point). `letterbox` on its own is
the reference's `LetterBox` (its resize rounding), what its predictor applies to any image.

Differences from the reference, and why:
- Images are resized and warped with PIL's bilinear filter (no OpenCV in jaxvision). PIL
  antialiases when a resize shrinks; cv2's INTER_LINEAR does not. PIL samples with pixel i
  covering [i, i + 1) while cv2's warpAffine puts pixel i's centre at i: the reference's warped
  image sits up to 0.5 |1 - s| px off its transformed boxes; ours follows its boxes exactly.
- HSV works in PIL's HSV (hue in 256 steps of the circle, rounding of its own) rather than
  OpenCV's (hue in 180 steps): the same jitter, slightly different quantisation (on the test
  fixture's random image, per channel: median difference 0, 95th percentile 5, max 11 of 255).
- `letterbox` scales boxes per axis by the resize's exact factors; the reference's LetterBox
  by its single ratio (its training and validation loads scale per axis, as we do).
- Evaluation pads every image to the square canvas; the reference's validation batches by
  aspect ratio (`rect=True`) and pads each batch only to its own stride-multiple shape, so
  its published mAP can differ slightly from ours on the same weights.
- The 3 mosaic partners come uniformly from the whole source, seeded by the example's stream
  position; the reference draws them from a buffer of recently loaded images (a cache
  optimisation) unless it caches in RAM, where it draws from the whole set as we do.
- Mixup, cutmix, copy-paste (all off by default) and Albumentations' extras (used only when
  that package is installed) are not implemented; the 9-image mosaic neither.
- Close-mosaic is keyed by stream position (`mosaic_until`, see `close_mosaic_position`), so a
  resumed run switches at exactly the same example; the reference rebuilds its data loader at
  the epoch boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

# The detection records' per-box fields and their batch padding, as the other detectors'.
from jaxvision.data.detection_transforms import _ragged, _records
from jaxvision.data.yolo_augment import (
    flip_boxes,
    hsv_jitter,
    letterbox,
    mosaic,
    mosaic_centre,
    random_affine,
    resize_long_side,
    take,
)
from jaxvision.errors import UserError

__all__ = ["YOLOEvalTransform", "YOLOTrainTransform", "close_mosaic_position", "letterbox"]


def close_mosaic_position(
    total_examples: int, examples_per_epoch: int, close_epochs: int
) -> int | None:
    """`YOLOTrainTransform.mosaic_until` for mosaic off in the last `close_epochs` epochs.

    Args:
        total_examples: stream positions the run trains on (total steps x global batch).
        examples_per_epoch: positions per epoch (the source's length, times the repeats).
        close_epochs: the reference's `close_mosaic` (10); 0: mosaic never closes (None).
    """
    if close_epochs <= 0:
        return None
    return max(0, total_examples - close_epochs * examples_per_epoch)


@dataclasses.dataclass(frozen=True)
class YOLOTrainTransform:
    """YOLO's training augmentation of one example (the module docstring), every draw from
    `rng`, onto the S x S canvas.

    Mosaic reads 3 more examples from `source`, at indices drawn from `rng`. The pipeline seeds
    `rng` with the example's stream position, so the partners, like every other draw, are a
    pure function of (seed, position): batches stay a function of (seed, step) and a resumed
    run replays them exactly, in any process or worker. The transform holds the source rather
    than a stage of the pipeline doing the reading, so it is one picklable object, usable
    alone, and the pipeline's contract (`(example, rng) -> example`) only grows by the
    position: `positional = True` asks `train_batches` to pass `position`, the example's index
    in the stream, which decides close-mosaic (no mosaic from `mosaic_until` on).

    canvas: S. source: the training source (`[i] -> record`); needed when `mosaic` > 0.
    mosaic: probability of a mosaic. mosaic_until: first stream position without mosaic
        (`close_mosaic_position`); None: never closes.
    degrees, translate, scale, shear, perspective: the random affine's ranges.
    hsv: (hue, saturation, value) gains. fliplr, flipud: flip probabilities.
    max_boxes: M, box rows per example in a batch; a random M of more are kept.

    Returns the example with `image` uint8 [S, S, 3], `boxes` float32 [N, 4] canvas pixels,
    `classes`/`iscrowd` (zeros) int32 [N], `area` float32 [N] (the input's area times the
    squared scale, times the share of the box left on the canvas), `scale` float32 [2] (sy, sx):
    the load's factors times the affine's s, canvas pixels per pixel of the example's own image
    (up to shear and perspective), `size` int32 [2] (S, S): the whole canvas is image.
    """

    positional: ClassVar[bool] = True

    canvas: int
    source: Sequence | None = dataclasses.field(default=None, repr=False, compare=False)
    mosaic: float = 1.0
    mosaic_until: int | None = None
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    perspective: float = 0.0
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)
    fliplr: float = 0.5
    flipud: float = 0.0
    max_boxes: int = 100

    def __post_init__(self):
        if self.canvas < 1:
            raise UserError(f"canvas must be positive, got {self.canvas}")
        if not 0 <= self.mosaic <= 1 or not 0 <= self.fliplr <= 1 or not 0 <= self.flipud <= 1:
            raise UserError(
                f"mosaic, fliplr and flipud are probabilities in [0, 1], got {self.mosaic}, "
                f"{self.fliplr}, {self.flipud}"
            )
        if self.mosaic > 0 and not self.source:
            raise UserError("mosaic needs the training source to draw 3 more images from")
        if not 0 <= self.scale < 1 or not 0 <= self.translate <= 0.5:
            raise UserError(
                f"need 0 <= scale < 1 and 0 <= translate <= 0.5, got scale={self.scale}, "
                f"translate={self.translate}"
            )

    @property
    def ragged(self) -> tuple[tuple[str, int], ...]:
        return _ragged(self.max_boxes)

    def _load(self, example: dict) -> tuple[np.ndarray, dict, np.ndarray]:
        fields = _records(example)
        fields = take(fields, fields["iscrowd"] == 0)  # the reference trains on no crowd boxes
        image, fields["boxes"], factors = resize_long_side(
            np.asarray(example["image"], np.uint8), fields["boxes"], self.canvas
        )
        fields["area"] = fields["area"] * (factors[0] * factors[1])
        return image, fields, factors

    def __call__(self, example: dict, rng: np.random.Generator, position: int = 0) -> dict:
        image, fields, factors = self._load(example)
        mosaic_open = self.mosaic_until is None or position < self.mosaic_until
        if mosaic_open and self.mosaic > 0 and rng.random() < self.mosaic:
            others = [
                self._load(self.source[int(i)]) for i in rng.integers(len(self.source), size=3)
            ]
            images = [image] + [o[0] for o in others]
            parts = [fields] + [o[1] for o in others]
            image, fields = mosaic(images, parts, self.canvas, mosaic_centre(self.canvas, rng))
        image, fields, s = random_affine(
            image,
            fields,
            rng,
            self.canvas,
            degrees=self.degrees,
            translate=self.translate,
            scale=self.scale,
            shear=self.shear,
            perspective=self.perspective,
        )
        image = hsv_jitter(image, rng, self.hsv)
        if self.flipud and rng.random() < self.flipud:
            image, fields["boxes"] = image[::-1], flip_boxes(fields["boxes"], self.canvas, 1)
        if self.fliplr and rng.random() < self.fliplr:
            image, fields["boxes"] = image[:, ::-1], flip_boxes(fields["boxes"], self.canvas, 0)
        if len(fields["boxes"]) > self.max_boxes:
            keep = np.sort(rng.choice(len(fields["boxes"]), self.max_boxes, replace=False))
            fields = take(fields, keep)
        return {
            **example,
            **fields,
            "image": np.ascontiguousarray(image),
            "scale": (factors * s).astype(np.float32),
            "size": np.array([self.canvas, self.canvas], np.int32),
        }


@dataclasses.dataclass(frozen=True)
class YOLOEvalTransform:
    """The reference's validation input: the longer side to S (`resize_long_side`), then a
    centred pad with 114 (`letterbox`); crowd boxes stay, `mask` is True.

    canvas: S. max_boxes: M, box rows per example in a batch (more is an error).

    Returns the example with `image` uint8 [S, S, 3], `boxes` float32 [N, 4] canvas pixels,
    `classes`/`iscrowd` int32 [N], `area` float32 [N] (as given, input pixels), `scale` float32
    [2] (sy, sx) canvas pixels per input pixel, `size` int32 [2] (h, w) of the image on the
    canvas, `offset` int32 [2] (top, left) where it starts: a canvas box maps back to the input
    as ((x1 - left) / sx, (y1 - top) / sy, (x2 - left) / sx, (y2 - top) / sy).
    """

    canvas: int
    max_boxes: int = 100

    def __post_init__(self):
        if self.canvas < 1:
            raise UserError(f"canvas must be positive, got {self.canvas}")

    @property
    def ragged(self) -> tuple[tuple[str, int], ...]:
        return _ragged(self.max_boxes)

    def __call__(self, example: dict) -> dict:
        fields = _records(example)
        image = np.asarray(example["image"], np.uint8)
        loaded, boxes, factors = resize_long_side(image, fields["boxes"], self.canvas)
        image, boxes, scale, size, offset = letterbox(loaded, boxes, self.canvas, scaleup=False)
        fields.update(
            image=image, boxes=boxes, scale=factors * scale, size=size, offset=offset, mask=True
        )
        return {**example, **fields}
