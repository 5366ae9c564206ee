"""Detection transforms: an example's image and boxes moved together, then put on a fixed canvas.

`DetectionTrainTransform` and `DetectionEvalTransform` take a detection record (`image` uint8
[H, W, 3], `boxes` float32 [N, 4] xyxy pixels, `classes`, `iscrowd`, `area` [N], `image_id`)
and return it on the square canvas S x S that every batch shares:

- the image is resized as torchvision's GeneralizedRCNNTransform does: with `min_size`, the
  shorter side to `min_size` unless the longer would pass `max_size` (scale = min(min_size /
  short, max_size / long), new side = floor(side * scale), torch's rounding); without it, to
  S x S ignoring the aspect ratio (SSD's fixed 300 x 300). Then it is padded with zeros at the
  bottom and right to S x S.
- boxes follow with the exact per-axis factors of that resize, `scale` = (sy, sx) = (new_h / h,
  new_w / w) canvas pixels per input pixel, which is also what torchvision scales boxes by.
  A box in canvas pixels maps back to the input image as (x1 / sx, y1 / sy, x2 / sx, y2 / sy),
  after clipping it to `size` = (new_h, new_w), the resized image's extent inside the canvas
  (torchvision clips its detections to it too).
- `ragged` names the per-box fields that `data.Batcher` pads to `max_boxes` rows with a mask.

Known difference: PIL's bilinear resize antialiases when it shrinks (its filter widens with the
factor) while torch's `interpolate(mode="bilinear", antialias=False)` does not, so shrunken
images differ slightly from torchvision's; enlarged ones agree up to edge handling and rounding.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance

from jaxvision.errors import UserError

# Zoom-out fill: the ImageNet mean in 0..255, as torchvision's SSD recipe fills with.
FILL = (123, 117, 104)
BOX_FIELDS = ("boxes", "classes", "iscrowd", "area")
# RandomIoUCrop's minimum IoU options (1.0: keep the image whole) and its limits.
IOU_OPTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
IOU_SCALE = (0.3, 1.0)
IOU_ASPECT = (0.5, 2.0)
IOU_TRIALS = 40
IOU_OPTION_DRAWS = 50  # torchvision loops until it finds a crop; we stop and keep the image


def _ragged(max_boxes: int) -> tuple[tuple[str, int], ...]:
    return tuple((field, max_boxes) for field in BOX_FIELDS)


def _check_resize(canvas: int, min_size: int | None, max_size: int | None) -> None:
    if canvas < 1:
        raise UserError(f"canvas must be positive, got {canvas}")
    if min_size is None:
        if max_size is not None:
            raise UserError("max_size needs min_size: without it images are resized to the canvas")
        return
    if min_size < 1 or (max_size or canvas) > canvas or (max_size is not None and max_size < 1):
        raise UserError(
            f"need 1 <= min_size and 1 <= max_size <= canvas, got min_size={min_size}, "
            f"max_size={max_size}, canvas={canvas}"
        )


def _records(example: dict) -> dict:
    """The per-box fields with the batch dtypes, and boxes shaped [N, 4] even when N = 0."""
    return {
        "boxes": np.asarray(example["boxes"], np.float32).reshape(-1, 4),
        "classes": np.asarray(example["classes"], np.int32).reshape(-1),
        "iscrowd": np.asarray(example["iscrowd"], np.int32).reshape(-1),
        "area": np.asarray(example["area"], np.float32).reshape(-1),
    }


def _take(fields: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in fields.items()}


@dataclasses.dataclass(frozen=True)
class DetectionEvalTransform:
    """Resize and pad only (see the module docstring); crowd boxes stay, `mask` is True.

    canvas: S, the side of the square canvas.
    min_size, max_size: aspect-preserving resize (max_size defaults to S); min_size None:
        resize to S x S.
    max_boxes: M, box rows per example in a batch (an example with more is an error).

    Returns the example with `image` uint8 [S, S, 3], `boxes` float32 [N, 4] in canvas pixels,
    `classes`/`iscrowd` int32 [N], `area` float32 [N] (as given: COCO's area in input pixels,
    what the COCO evaluator's size ranges expect), `scale` float32 [2] (sy, sx), `size` int32
    [2] (h, w), `mask` True.
    """

    canvas: int
    min_size: int | None = None
    max_size: int | None = None
    max_boxes: int = 100

    def __post_init__(self):
        _check_resize(self.canvas, self.min_size, self.max_size)

    @property
    def ragged(self) -> tuple[tuple[str, int], ...]:
        return _ragged(self.max_boxes)

    def __call__(self, example: dict) -> dict:
        fields = _records(example)
        image, boxes, scale, size = resize_pad(
            example["image"], fields["boxes"], self.canvas, self.min_size, self.max_size
        )
        fields.update(image=image, boxes=boxes, scale=scale, size=size, mask=True)
        return {**example, **fields}


@dataclasses.dataclass(frozen=True)
class DetectionTrainTransform:
    """The training augmentation of one example, boxes moved with the image; in this order:

    1. crowd boxes dropped (torchvision's detectors train on iscrowd 0 only);
    2. `photometric`: SSD's photometric distortion (torchvision's RandomPhotometricDistort:
       brightness 0.875-1.125, contrast and saturation 0.5-1.5, hue +-0.05, each with p 0.5,
       contrast before or after saturation and hue, channels permuted with p 0.5);
    3. `zoom_out`: with p 0.5, the image on a `fill` canvas 1-4x its size (RandomZoomOut);
    4. `iou_crop`: SSD's crop with a minimum IoU with some box (RandomIoUCrop: boxes whose
       centre falls outside the crop are dropped, the rest clipped to it);
    5. `crop` = (lo, hi): a plain random crop, each side lo..hi of the image's; boxes are
       clipped to it and those keeping less than `min_visible` of their area dropped;
    6. `flip`: mirror left-right with p 0.5;
    7. resize (shorter side to a size drawn from `jitter` = (lo, hi) inclusive if given, else
       `min_size`) and pad, as `DetectionEvalTransform`; boxes of zero area are dropped.

    If more than `max_boxes` boxes are left, a random `max_boxes` of them are kept, so a crowded
    image never stops a run. `area` is rescaled with its box (canvas pixels squared, times the
    share of the box a crop kept). Every random choice comes from `rng`.
    """

    canvas: int
    min_size: int | None = None
    max_size: int | None = None
    max_boxes: int = 100
    jitter: tuple[int, int] | None = None
    flip: bool = True
    photometric: bool = False
    zoom_out: bool = False
    iou_crop: bool = False
    crop: tuple[float, float] | None = None
    min_visible: float = 0.25
    fill: tuple[int, int, int] = FILL

    def __post_init__(self):
        _check_resize(self.canvas, self.min_size, self.max_size)
        if self.jitter is not None:
            lo, hi = self.jitter
            if self.min_size is None or not 1 <= lo <= hi:
                raise UserError(
                    f"jitter={self.jitter} needs min_size (an aspect-preserving resize) and "
                    "1 <= lo <= hi"
                )
        if self.crop is not None and not 0 < self.crop[0] <= self.crop[1] <= 1:
            raise UserError(f"crop={self.crop} must be (lo, hi) with 0 < lo <= hi <= 1")
        if not 0 <= self.min_visible <= 1:
            raise UserError(f"min_visible must be in [0, 1], got {self.min_visible}")

    @property
    def ragged(self) -> tuple[tuple[str, int], ...]:
        return _ragged(self.max_boxes)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        fields = _records(example)
        fields = _take(fields, fields["iscrowd"] == 0)
        image = np.asarray(example["image"], np.uint8)
        if self.photometric:
            image = photometric_distort(image, rng)
        if self.zoom_out:
            image, fields["boxes"] = zoom_out(image, fields["boxes"], rng, self.fill)
        if self.iou_crop:
            image, fields = iou_crop(image, fields, rng)
        if self.crop is not None:
            image, fields = random_crop(image, fields, rng, self.crop, self.min_visible)
        if self.flip and rng.random() < 0.5:
            image, fields["boxes"] = hflip(image, fields["boxes"])
        min_size = self.min_size
        if self.jitter is not None:
            min_size = int(rng.integers(self.jitter[0], self.jitter[1] + 1))
        image, boxes, scale, size = resize_pad(
            image, fields["boxes"], self.canvas, min_size, self.max_size
        )
        fields["boxes"] = boxes
        fields["area"] = fields["area"] * (scale[0] * scale[1])
        fields = _take(fields, (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        if len(fields["boxes"]) > self.max_boxes:
            keep = np.sort(rng.choice(len(fields["boxes"]), self.max_boxes, replace=False))
            fields = _take(fields, keep)
        return {**example, **fields, "image": image, "scale": scale, "size": size}


# ---------------------------------------------------------------------------------------------
# geometry


def resize_pad(
    image: np.ndarray,
    boxes: np.ndarray,
    canvas: int,
    min_size: int | None,
    max_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resizes (see the module docstring) and pads bottom/right with zeros to the canvas.

    Args:
        image: uint8 [H, W, 3].
        boxes: float32 [N, 4] xyxy in image pixels.
        canvas: S.
        min_size, max_size: shorter side target and longer side limit (default S); min_size
            None: resize to S x S.

    Returns:
        (uint8 [S, S, 3], float32 [N, 4] canvas pixels clipped to the resized image, float32 [2]
        (sy, sx), int32 [2] (new_h, new_w)).
    """
    height, width = image.shape[:2]
    if min_size is None:
        new_h = new_w = canvas
    else:
        factor = min(min_size / min(height, width), (max_size or canvas) / max(height, width))
        # torch's interpolate(scale_factor=..., recompute_scale_factor=True) floors the same
        # double product; at least 1 pixel for absurdly thin images.
        new_h, new_w = max(1, math.floor(height * factor)), max(1, math.floor(width * factor))
    if (new_h, new_w) != (height, width):
        pil = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        image = np.asarray(pil)
    out = np.zeros((canvas, canvas, 3), np.uint8)
    out[:new_h, :new_w] = image
    sy, sx = new_h / height, new_w / width
    scaled = np.asarray(boxes, np.float64).reshape(-1, 4) * (sx, sy, sx, sy)
    scaled = np.clip(scaled, 0, (new_w, new_h, new_w, new_h)).astype(np.float32)
    return out, scaled, np.array([sy, sx], np.float32), np.array([new_h, new_w], np.int32)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors left-right: x -> W - x, so (x1, x2) -> (W - x2, W - x1)."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image[:, ::-1], flipped


def _crop(image, fields, left, top, width, height, keep=None):
    """The window (left, top, width, height) of `image`, with boxes shifted and clipped to it;
    `keep`: bool [N], the boxes to keep (default all). Areas shrink with the share kept."""
    boxes = fields["boxes"]
    shifted = boxes - np.array([left, top, left, top], np.float32)
    clipped = np.clip(shifted, 0, np.array([width, height, width, height], np.float32))
    before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    after = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    share = np.divide(after, before, out=np.zeros_like(after), where=before > 0)
    fields = {**fields, "boxes": clipped, "area": fields["area"] * share}
    if keep is not None:
        fields = _take(fields, keep)
    return image[top : top + height, left : left + width], fields, share


def random_crop(image, fields, rng, side_range, min_visible):
    """A window with each side a uniform share in `side_range` of the image's, placed
    uniformly; boxes keeping less than `min_visible` of their area (or none) are dropped."""
    height, width = image.shape[:2]
    fh, fw = rng.uniform(side_range[0], side_range[1], 2)
    crop_h, crop_w = max(1, round(height * fh)), max(1, round(width * fw))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    cropped, moved, share = _crop(image, fields, left, top, crop_w, crop_h)
    return cropped, _take(moved, (share >= min_visible) & (share > 0))


def iou_crop(image, fields, rng):
    """SSD's random crop (torchvision's RandomIoUCrop): draw a minimum IoU from `IOU_OPTIONS`
    (1.0: keep the image); try `IOU_TRIALS` crops with sides 0.3-1 of the image's and aspect
    0.5-2 for one that holds some box centre and has IoU >= the minimum with one of those
    boxes. Boxes with centres outside the crop are dropped, the rest clipped to it. An image
    without boxes, or without a crop found in `IOU_OPTION_DRAWS` draws, is kept whole."""
    boxes = fields["boxes"]
    if not len(boxes):
        return image, fields
    height, width = image.shape[:2]
    centre_x = 0.5 * (boxes[:, 0] + boxes[:, 2])
    centre_y = 0.5 * (boxes[:, 1] + boxes[:, 3])
    for _ in range(IOU_OPTION_DRAWS):
        min_iou = IOU_OPTIONS[int(rng.integers(0, len(IOU_OPTIONS)))]
        if min_iou >= 1.0:
            return image, fields
        for _ in range(IOU_TRIALS):
            r = IOU_SCALE[0] + (IOU_SCALE[1] - IOU_SCALE[0]) * rng.random(2)
            new_w, new_h = int(width * r[0]), int(height * r[1])
            if new_h == 0 or not IOU_ASPECT[0] <= new_w / new_h <= IOU_ASPECT[1]:
                continue
            u = rng.random(2)
            left, top = int((width - new_w) * u[0]), int((height - new_h) * u[1])
            right, bottom = left + new_w, top + new_h
            if left == right or top == bottom:
                continue
            inside = (left < centre_x) & (centre_x < right) & (top < centre_y) & (centre_y < bottom)
            if not inside.any():
                continue
            if _iou_with(boxes[inside], (left, top, right, bottom)).max() < min_iou:
                continue
            cropped, moved, _ = _crop(image, fields, left, top, new_w, new_h, keep=inside)
            return cropped, moved
    return image, fields


def _iou_with(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = window
    w = np.clip(np.minimum(boxes[:, 2], right) - np.maximum(boxes[:, 0], left), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], bottom) - np.maximum(boxes[:, 1], top), 0, None)
    inter = w * h
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (right - left) * (bottom - top) - inter)


def zoom_out(image, boxes, rng, fill=FILL, side_range=(1.0, 4.0), p=0.5):
    """With probability `p`, places the image on a `fill` canvas `r` times its size, `r`
    uniform in `side_range`, at a uniform position (torchvision's RandomZoomOut)."""
    if rng.random() >= p:
        return image, boxes
    height, width = image.shape[:2]
    r = rng.uniform(side_range[0], side_range[1])
    out_w, out_h = int(width * r), int(height * r)
    u = rng.random(2)
    left, top = int((out_w - width) * u[0]), int((out_h - height) * u[1])
    out = np.empty((out_h, out_w, 3), np.uint8)
    out[:] = np.asarray(fill, np.uint8)
    out[top : top + height, left : left + width] = image
    return out, boxes + np.array([left, top, left, top], np.float32)


# ---------------------------------------------------------------------------------------------
# photometric


def photometric_distort(image: np.ndarray, rng: np.random.Generator, p: float = 0.5):
    """SSD's colour distortion with torchvision's RandomPhotometricDistort ranges and order,
    on PIL's kernels (the ones torchvision applies to PIL images).

    Args:
        image: uint8 [H, W, 3].

    Returns:
        uint8 [H, W, 3].
    """
    draws = rng.random(6)
    brightness = rng.uniform(0.875, 1.125) if draws[0] < p else None
    contrast = rng.uniform(0.5, 1.5) if draws[1] < p else None
    saturation = rng.uniform(0.5, 1.5) if draws[2] < p else None
    hue = rng.uniform(-0.05, 0.05) if draws[3] < p else None
    contrast_first = draws[4] < 0.5
    permutation = rng.permutation(3) if draws[5] < p else None
    pil = Image.fromarray(image)
    if brightness is not None:
        pil = ImageEnhance.Brightness(pil).enhance(brightness)
    if contrast is not None and contrast_first:
        pil = ImageEnhance.Contrast(pil).enhance(contrast)
    if saturation is not None:
        pil = ImageEnhance.Color(pil).enhance(saturation)
    if hue is not None:
        h, s, v = pil.convert("HSV").split()
        # Hue wraps around, so the uint8 overflow is the rotation wanted (as torchvision's).
        shifted = np.asarray(h, np.uint8) + np.uint8(int(hue * 255) % 256)
        pil = Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB")
    if contrast is not None and not contrast_first:
        pil = ImageEnhance.Contrast(pil).enhance(contrast)
    out = np.asarray(pil)
    return out[:, :, permutation] if permutation is not None else out
