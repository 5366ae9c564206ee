"""A synthetic detection set that needs no download: coloured shapes on textured backgrounds.

Five classes (1 circle/ellipse, 2 rectangle, 3 triangle, 4 five-pointed star, 5 plus-shaped
cross), each drawn as a filled polygon, stretched (aspect 1:2 to 2:1) and rotated at random,
from about 20 pixels (24 for stars, whose points need room) to 3/5 of the image side, in random
colours. Backgrounds vary per image: flat, linear gradient, stripes (hard or soft), checks or
smooth blobs, all between two random colours, with thin random lines as clutter and pixel
noise on top. An image holds 0..`max_objects` shapes (uniform; a shape that cannot be placed
under the rules below is left out, so empty images occur too, about 1 in 5 with the defaults).

Rules that keep every label honest:
- the box is the shape's *visible extent*: the tight bounds of the pixels that show its fill
  after later shapes are drawn over it and the image border cuts it (COCO's boxes bound the
  visible object as well). Edges are pixel edges: a shape covering columns 3..9 has x1 = 3,
  x2 = 10, so boxes are whole numbers and `0 <= x1 < x2 <= W`.
- every labelled shape keeps at least `MIN_VISIBLE` (85%) of its pixels visible, whatever
  overlaps it and whatever the border cuts off (a shape that would break this is moved or
  left out);
- a shape's colour stays apart from the background's two colours (usually far; in 1 of 20
  shapes only just: a low-contrast shape) and from the colours of shapes it overlaps, so two
  shapes never merge into one blob.

What an image looks like: training image 5 of the default set (128 x 128, seed 0) is a
yellow-to-teal gradient crossed by a thin green and a thin grey line; on it a dark-green
rectangle turned about 30 degrees (box 28, 37, 100, 112) lying over a blue star (box 79, 38,
124, 77): 2 boxes, classes rectangle, star.

Item `i` of a split is drawn from a generator seeded with (seed, split, i): opening the set
costs nothing, any worker can build any item, and an item is the same wherever it is built.
Drawing one 128 x 128 image takes about 0.5-0.7 ms on one core (numpy + PIL's polygon fill).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from jaxvision.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, DatasetRequest
from jaxvision.errors import UserError

CLASS_NAMES = ("__background__", "circle", "rectangle", "triangle", "star", "cross")
OPTIONS = ("image_size", "num_train", "num_test", "max_objects", "train_max_objects", "seed")
SPLITS = {"train": 0, "test": 1}  # the split's part of every item's seed

MIN_VISIBLE = 0.85  # share of a shape's pixels that must stay visible
MIN_PIXELS = 12  # a shape with fewer pixels in the image is too small to tell apart
# Smallest size (geometric mean of the unrotated width and height, pixels) per class.
_MIN_SIZE = {1: 20.0, 2: 20.0, 3: 22.0, 4: 24.0, 5: 22.0}
_MAX_SIZE_SHARE = 0.6  # largest size as a share of the image side
_TRIES = 4  # placements tried per shape before it is left out
# render_single: placements tried per background, and backgrounds, before it gives up.
_SINGLE_TRIES, _SINGLE_BACKGROUNDS = 16, 8
_LOW_CONTRAST = 1 / 20  # share of shapes coloured close to the background
# Euclidean RGB distances: shape to background (normal / low-contrast), shape to overlapped shape.
_FAR, _NEAR, _APART = 90.0, (32.0, 48.0), 70.0


def open_shapes(
    image_size: int = 128,
    num_train: int = 16000,
    num_test: int = 500,
    max_objects: int = 5,
    train_max_objects: int = 0,
    seed: int = 0,
) -> Dataset:
    """The shapes set (see the module docstring); nothing is drawn until an item is read.

    Args:
        image_size: side of the square images, at least 32.
        num_train, num_test: images per split.
        max_objects: most shapes an image may hold.
        train_max_objects: the same for training images only (0: max_objects). Denser training
            scenes give more objects to learn from per image computed; the test split is
            unchanged.
        seed: fixes every image; two seeds give unrelated sets.
    """
    if int(image_size) < 32:
        raise UserError(f"shapes image_size must be at least 32, got {image_size}")
    if int(num_train) < 1 or int(num_test) < 1:
        raise UserError(f"shapes needs num_train and num_test >= 1, got {num_train}, {num_test}")
    train_max_objects = int(train_max_objects) or int(max_objects)
    if min(int(max_objects), train_max_objects) < 1:
        raise UserError(
            f"shapes max_objects and train_max_objects must be at least 1, got {max_objects}, "
            f"{train_max_objects}"
        )
    kwargs = dict(image_size=int(image_size), seed=int(seed))
    return Dataset(
        train=ShapesSource("train", int(num_train), max_objects=train_max_objects, **kwargs),
        test=ShapesSource("test", int(num_test), max_objects=int(max_objects), **kwargs),
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=int(image_size),
        max_boxes=max(int(max_objects), train_max_objects),
    )


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("shapes", options=...): the options are `open_shapes`'s arguments."""
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for 'shapes': use {', '.join(OPTIONS)}"
        )
    return open_shapes(**request.options)


class ShapesSource(Sequence):
    """One split of the shapes set: item `i` is drawn on access from (seed, split, i).

    Items: `{"image": uint8 [S, S, 3], "boxes": float32 [N, 4] xyxy pixels, "classes": int32
    [N] in 1..5, "iscrowd": int32 [N] zeros, "area": float32 [N] box areas, "image_id": i + 1}`
    (ids start at 1 so that the zero of a padding row is never a real image).
    """

    # Drawing costs ~1 ms, more than the rest of the input pipeline: items are kept once drawn,
    # up to this many bytes of images per source (16,000 images of 128 x 128 take 786 MB).
    CACHE_BYTES = 1024 * 2**20

    def __init__(self, split: str, length: int, *, image_size: int, max_objects: int, seed: int):
        self.split, self.length = split, length
        self.image_size, self.max_objects, self.seed = image_size, max_objects, seed
        self._cache: dict[int, dict] = {}
        self._cache_items = self.CACHE_BYTES // (3 * image_size * image_size)

    def __getstate__(self) -> dict:
        # Worker processes get the source without the drawn items: they draw their own.
        return {**self.__dict__, "_cache": {}}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < self.length:
            raise IndexError(f"shapes {self.split} has {self.length} images, not {index + 1}")
        record = self._cache.get(index)
        if record is None:
            record = self.draw(index)
            if len(self._cache) < self._cache_items:  # the same record wherever it is drawn
                self._cache[index] = record
        # Transforms build new arrays, but a caller may write into what it gets: a copy each.
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in record.items()}

    def draw(self, index: int) -> dict:
        """Item `index`, drawn afresh."""
        split = SPLITS[self.split]
        return render(self.seed, split, index, self.image_size, self.max_objects)[0]


def render(
    seed: int, split: int, index: int, size: int, max_objects: int, noise: bool = True
) -> tuple[dict, np.ndarray]:
    """Draws one image; returns (record, owner) where owner uint8 [S, S] holds, per pixel, 1 + the
    row of the shape it shows (0: background), which the boxes are the bounds of."""
    rng = np.random.default_rng([seed, split, index])
    image, palette = _background(rng, size)
    owner = np.zeros((size, size), np.uint8)
    shapes = _Placed(max_objects)
    for _ in range(int(rng.integers(0, max_objects + 1))):
        label = int(rng.integers(1, len(CLASS_NAMES)))
        for _ in range(_TRIES):
            placed = _place(rng, label, size, owner, shapes, palette)
            if placed is not None:
                window, mask, under, colour, pixels = placed
                (y0, y1), (x0, x1) = window
                row = shapes.count
                owner[y0:y1, x0:x1][mask] = row + 1
                _paint(rng, image[y0:y1, x0:x1], mask, colour)
                shapes.add(label, colour, under, int(np.count_nonzero(mask)), pixels, window)
                break
    if noise:
        image = _add_noise(rng, image)
    boxes = np.zeros((shapes.count, 4), np.float32)
    for row, ((y0, y1), (x0, x1)) in enumerate(shapes.windows):
        mine = owner[y0:y1, x0:x1] == row + 1
        rows, cols = np.flatnonzero(mine.any(1)), np.flatnonzero(mine.any(0))
        boxes[row] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
    record = {
        "image": image,
        "boxes": boxes,
        "classes": np.asarray(shapes.classes, np.int32),
        "iscrowd": np.zeros(shapes.count, np.int32),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "image_id": index + 1,
    }
    return record, owner


def render_single(
    seed: int, split: int, index: int, size: int, label: int, noise: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shape of class `label` (1..5) alone on a background drawn as `render`'s, under the
    same rules (the size range, at most 15% cut by the border, a colour apart from the
    background's). Returns (image uint8 [S, S, 3], box float32 [4]: the bounds of the shape's
    pixels, xyxy pixel edges, shown: bool [S, S], the shape's pixels). Drawn from a generator
    seeded with (seed, split, index, label): unrelated to `render`'s image `index`."""
    rng = np.random.default_rng([seed, split, index, label])
    for _ in range(_SINGLE_BACKGROUNDS):
        image, palette = _background(rng, size)
        owner = np.zeros((size, size), np.uint8)
        for _ in range(_SINGLE_TRIES):
            placed = _place(rng, label, size, owner, _Placed(1), palette)
            if placed is not None:
                ((y0, y1), (x0, x1)), mask, _, colour, _ = placed
                _paint(rng, image[y0:y1, x0:x1], mask, colour)
                shown = np.zeros((size, size), bool)
                shown[y0:y1, x0:x1] = mask
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                box = np.asarray(
                    (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1), np.float32
                )
                return (_add_noise(rng, image) if noise else image), box, shown
    # Not reached in practice (no item of the first 20,000 needed a second background).
    raise RuntimeError(f"could not place a shape of class {label} on image {index}")


class _Placed:
    """The shapes drawn so far: classes, colours, visible and whole pixel counts, windows."""

    def __init__(self, capacity: int):
        self.count = 0
        self.classes: list[int] = []
        self.colours = np.zeros((capacity, 3), np.float32)
        self.visible = np.zeros(capacity, np.int64)
        self.full = np.zeros(capacity, np.int64)
        self.windows: list[tuple] = []

    def add(self, label, colour, under, visible, full, window) -> None:
        n = self.count
        self.visible[:n] -= under[1 : n + 1]
        self.classes.append(label)
        self.colours[n] = colour[:3]
        self.visible[n], self.full[n] = visible, full
        self.windows.append(window)
        self.count += 1


# ---------------------------------------------------------------------------------------------
# backgrounds


_STEPS = np.linspace(0, 1, 256, dtype=np.float32)[:, None]
_KIND_CUMULATIVE = (0.15, 0.4, 0.65, 0.8)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [S, S, 3] texture between two colours, and those colours float32 [2, 3]."""
    palette = rng.integers(0, 256, (2, 3)).astype(np.float32)
    # flat 15%, gradient 25%, stripes 25%, checks 15%, blobs 20% (rng.choice(p=) costs 8x more)
    kind = int(np.searchsorted(_KIND_CUMULATIVE, rng.random(), side="right"))
    x, y = _grid(size)
    angle = rng.uniform(0, math.pi)
    if kind == 0:  # flat
        palette[1] = palette[0]
        t = np.zeros((size, size), np.uint8)
    elif kind in (1, 2):
        along = x * math.cos(angle) + y * math.sin(angle)
        if kind == 1:  # linear gradient
            lo, hi = along.min(), along.max()
            t = (along - lo) * (255 / (hi - lo))
        else:  # stripes, hard or soft
            phase = along * (1 / rng.uniform(4, 32)) + rng.uniform()
            if rng.random() < 0.5:  # (float % is 10x slower than this integer parity)
                t = (np.floor(2 * phase).astype(np.int32) & 1) * 255
            else:
                t = 127.5 + 127.5 * np.sin(2 * np.pi * phase)
        t = t.astype(np.uint8)
    elif kind == 3:  # checks
        cell = int(rng.integers(4, 33))
        ramp = np.arange(size) // cell
        t = (((ramp[None, :] + ramp[:, None]) & 1) * 255).astype(np.uint8)
    else:  # smooth blobs: coarse noise, bilinearly upsampled
        coarse = rng.integers(0, 256, (int(rng.integers(2, 7)),) * 2, dtype=np.uint8)
        t = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    # The texture t in 0..255 picks a colour on the segment between the two: one table lookup.
    table = palette[0] + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (
        palette[1] - palette[0]
    )
    image = np.take(table.astype(np.uint8), t, axis=0)  # 4x faster than table[t]
    lines = int(rng.integers(0, 3))
    if lines:  # clutter: thin lines, which no class resembles
        pil = Image.fromarray(image)
        draw = ImageDraw.Draw(pil)
        for _ in range(lines):
            ends = rng.uniform(-0.1 * size, 1.1 * size, 4).tolist()
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.line(ends, fill=fill, width=int(rng.integers(1, 3)))
        image = np.array(pil)
    return image, palette


def _distance_to_segment(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """float [n]: Euclidean RGB distance from each of `colours` [n, 3] to the segment between the
    two palette colours (every background pixel lies on it, before noise and lines)."""
    a, b = palette
    span = b - a
    t = (colours - a) @ span / max(float(span @ span), 1e-6)
    t = np.minimum(np.maximum(t, 0), 1)
    return np.sqrt(((colours - (a + t[:, None] * span)) ** 2).sum(1))


_NOISE_SIGMAS = (0, 3, 6, 10)  # pixel noise levels, one drawn per image


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """int16 [levels, 2S, 2S, 3] Gaussian noise at each of `_NOISE_SIGMAS`; an image takes a
    random window of one, 3x faster than drawing fresh normals. Fixed, so an item still depends
    on its own seed only."""
    unit = np.random.default_rng(20250101).standard_normal((2 * size, 2 * size, 3))
    return np.stack([np.rint(sigma * unit) for sigma in _NOISE_SIGMAS]).astype(np.int16)


def _add_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    level = int(rng.integers(0, len(_NOISE_SIGMAS)))
    oy, ox = (int(v) for v in rng.integers(0, size, 2))
    if _NOISE_SIGMAS[level] == 0:
        return image
    noisy = image + _noise_bank(size)[level, oy : oy + size, ox : ox + size]  # int16
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# shapes


_CIRCLE = np.stack([np.cos(np.arange(32) * np.pi / 16), np.sin(np.arange(32) * np.pi / 16)], 1)
_RECTANGLE = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float)
_TRIANGLE = np.array([(0, -1), (1, 1), (-1, 1)], float)
_STAR_ANGLES = np.arange(10) * np.pi / 5 - np.pi / 2
_STAR = np.stack([np.cos(_STAR_ANGLES), np.sin(_STAR_ANGLES)], 1)
# The cross's 12 corners: (x, y) signs, and which coordinates are 1 rather than the half-thickness.
_CROSS = np.array(
    [(-1, -1), (1, -1), (1, -1), (1, -1), (1, 1), (1, 1), (1, 1), (-1, 1), (-1, 1), (-1, 1)]
    + [(-1, -1), (-1, -1)],
    float,
)
_CROSS_FULL = np.array(
    [
        (0, 1),
        (0, 1),
        (0, 0),
        (1, 0),
        (1, 0),
        (0, 0),
        (0, 1),
        (0, 1),
        (0, 0),
        (1, 0),
        (1, 0),
        (0, 0),
    ],
    bool,
)


def _outline(rng: np.random.Generator, label: int) -> np.ndarray:
    """float [V, 2] polygon of class `label` spanning [-1, 1] in x and y."""
    if label == 1:  # circle: a 32-gon is round at every size drawn here
        return _CIRCLE
    if label == 2:
        return _RECTANGLE
    if label == 3:
        return _TRIANGLE
    if label == 4:  # five points, inner radius 0.38-0.5 of the outer one
        radius = np.ones(10)
        radius[1::2] = rng.uniform(0.38, 0.5)
        return _STAR * radius[:, None]
    # cross (a plus sign): arms of half-thickness 0.3-0.5
    return _CROSS * np.where(_CROSS_FULL, 1.0, rng.uniform(0.3, 0.5))


def _place(rng, label: int, size: int, owner: np.ndarray, shapes: _Placed, palette):
    """Draws a random pose and colour for one shape of `label`; returns (window, mask, under,
    colour, pixels) or None when it breaks a rule. window: ((y0, y1), (x0, x1)) in the image;
    mask: bool over the window; under: per-owner counts of the pixels it covers; colour:
    (r, g, b, low_contrast); pixels: its whole area, the part outside the image included."""
    u = rng.random(7).tolist()
    log_lo, log_hi = math.log(_MIN_SIZE[label]), math.log(_MAX_SIZE_SHARE * size)
    extent = math.exp(log_lo + u[0] * (log_hi - log_lo))
    stretch = 2.0 ** (u[1] - 0.5)  # sqrt of an aspect ratio log-uniform in [1/2, 2]
    hx, hy = extent * stretch / 2, extent / stretch / 2
    c, s = math.cos(2 * math.pi * u[2]), math.sin(2 * math.pi * u[2])
    # Stretch by (hx, hy), then rotate: outline rows (x, y) -> x (hx c, hx s) + y (-hy s, hy c).
    points = _outline(rng, label) @ np.array([[hx * c, hx * s], [-hy * s, hy * c]])
    (lo_x, lo_y), (hi_x, hi_y) = points.min(0).tolist(), points.max(0).tolist()
    centre = []
    for lo, hi, inside, where in ((lo_x, hi_x, u[3], u[4]), (lo_y, hi_y, u[5], u[6])):
        if inside < 0.75 and hi - lo < size:  # wholly inside
            centre.append(-lo + where * (size - hi + lo))
        else:  # anywhere: the border may cut it
            centre.append(where * size)
    x0, y0 = math.floor(lo_x + centre[0]), math.floor(lo_y + centre[1])
    x1, y1 = math.ceil(hi_x + centre[0]) + 1, math.ceil(hi_y + centre[1]) + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    patch = Image.new("L", (x1 - x0, y1 - y0))
    ImageDraw.Draw(patch).polygon((points + (centre[0] - x0, centre[1] - y0)).ravel().tolist(), 1)
    mask = np.frombuffer(patch.tobytes(), np.uint8).reshape(y1 - y0, x1 - x0).view(bool)
    pixels = int(np.count_nonzero(mask))
    inside = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]  # the part inside the image
    shown = int(np.count_nonzero(inside))
    if shown < MIN_PIXELS or shown < MIN_VISIBLE * pixels:
        return None
    n = shapes.count
    under = np.bincount(owner[cy0:cy1, cx0:cx1][inside], minlength=n + 1)
    if n and (shapes.visible[:n] - under[1:] < MIN_VISIBLE * shapes.full[:n]).any():
        return None
    colour = _colour(rng, palette, shapes.colours[:n][under[1:] > 0])
    if colour is None:
        return None
    return ((cy0, cy1), (cx0, cx1)), inside, under, colour, pixels


def _colour(rng, palette, neighbours) -> tuple | None:
    """(r, g, b, low_contrast) far enough from the background and the overlapped shapes."""
    low = rng.random() < _LOW_CONTRAST
    candidates = rng.integers(0, 256, (12, 3)).astype(np.float32)
    gap = _distance_to_segment(candidates, palette)
    ok = (gap >= _NEAR[0]) & (gap <= _NEAR[1]) if low else gap >= _FAR
    if len(neighbours):
        apart = ((candidates[:, None] - neighbours[None]) ** 2).sum(2)
        ok &= (apart >= _APART**2).all(1)
    good = np.flatnonzero(ok)
    return (*candidates[good[0]].tolist(), low) if len(good) else None


def _paint(rng, window: np.ndarray, mask: np.ndarray, colour: tuple) -> None:
    """Fills `mask` of `window` (uint8 [h, w, 3], a view into the image) with `colour`, shaded
    by a gentle linear ramp (+-20 levels) one time in three unless it is a low-contrast shape."""
    rgb = np.asarray(colour[:3], np.float32)
    if colour[3] or rng.random() < 2 / 3:
        window[mask] = rgb.astype(np.uint8)
        return
    h, w = mask.shape
    angle = 2 * math.pi * rng.random()
    across = (np.arange(w, dtype=np.float32) * (40 * math.cos(angle) / w))[None, :, None]
    down = (np.arange(h, dtype=np.float32) * (40 * math.sin(angle) / h))[:, None, None]
    shaded = np.clip(rgb - 20 * (math.cos(angle) + math.sin(angle)) / 2 + across + down, 0, 255)
    np.copyto(window, shaded.astype(np.uint8), where=mask[..., None])
