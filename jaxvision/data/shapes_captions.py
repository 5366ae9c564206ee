"""A captioned image set that needs no download: coloured shapes and sentences saying what was
drawn ("shapes_captions"), for training and testing image–text models.

Each image shows one or two shapes on a plain grey background with a little pixel noise. A shape
is one of 5 kinds (circle, square, triangle, star, cross) in one of 6 named colours (red, green,
blue, yellow, purple, orange; each channel jittered by up to 12 levels), small (about 1/5 of the
side across) or large (about 2/5), turned by up to 15 degrees. Two shapes stand side by side
with a gap between them, so "left of" is always true of one and false of the other. Item `i`
holds one shape when `i` is even and two when it is odd (or always one with `max_objects=1`).

Captions are made from what was drawn, in one of these phrasings (chosen per item):
- one shape: "a red star", "a small red star";
- two shapes: "a red star left of a blue circle", "a small red star left of a large blue
  circle", "a blue circle right of a red star", "a large blue circle right of a small red star".
`captions(objects)` lists every phrasing of an item, `foil(objects)` the two-shape caption with
the shapes swapped (false for the image: what an "A left of B" vs "B left of A" check reads),
`CLASS_PROMPTS` each colour-shape class as its one-shape caption (zero-shot prompts).
The word vocabulary (`VOCABULARY`) is fixed, and so is the "shapes_words" tokenizer built on it.

Held-out combinations: red triangle, green star, blue cross, yellow circle and purple square
(`HELD_OUT`) are never drawn in the train split, so they are in none of its images and
captions; the test split draws all 30 colour-shape combinations. Each colour and each shape still
appears in training in other combinations. One-shape items cycle through the split's
combinations (train: the 25 seen ones; test: all 30): labels are balanced and known without
drawing.

Records (`CaptionedShapesSource`): `image` uint8 [S, S, 3]; `text` str, the item's caption;
`tokens` int32 [text_length], the caption's ids; `label` int, the colour-shape class of the
left (or only) shape, `colour * 5 + shape` (`CLASS_NAMES`: "red circle", "red square", ...);
`num_objects` int (1 or 2); `held_out` bool (some shape is a held-out combination); and per
shape, left to right, padded to 2 rows with -1 (boxes with 0): `object_classes`,
`object_colours`, `object_shapes`, `object_sizes` (0 small, 1 large) int32 [2], and
`object_boxes` float32 [2, 4] (xyxy pixel edges bounding the shape's pixels).

Item `i` of a split is drawn from a generator seeded with (seed, split, i, 3), the same wherever
it is built (3 keeps it apart from the detection shapes' generator). Drawing one item takes
about 0.7 ms of CPU at 32 to 128 pixels (Python's fixed costs dominate; measured on a busy 2-core
machine); drawn items are kept in memory as the shapes set keeps them. Do not flip
these images left-right in training: the captions' "left of" would turn false.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from jaxvision.data import shapes
from jaxvision.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, DatasetRequest
from jaxvision.data.tokenizers import WordTokenizer, make_tokenizer
from jaxvision.errors import UserError

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
RGB = np.array(
    [(210, 35, 35), (40, 160, 50), (40, 70, 215), (235, 210, 40), (140, 50, 180), (240, 130, 20)],
    np.float32,
)
SHAPES = ("circle", "square", "triangle", "star", "cross")
SIZES = ("small", "large")
CLASS_NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
HELD_OUT = (
    ("red", "triangle"),
    ("green", "star"),
    ("blue", "cross"),
    ("yellow", "circle"),
    ("purple", "square"),
)
HELD_OUT_LABELS = tuple(sorted(CLASS_NAMES.index(f"{c} {s}") for c, s in HELD_OUT))
SEEN_LABELS = tuple(k for k in range(len(CLASS_NAMES)) if k not in HELD_OUT_LABELS)
# Every word a caption uses, in a fixed order: the "shapes_words" tokenizer's ids follow it.
VOCABULARY = ("a", "an", "left", "right", "of", *SIZES, *COLOURS, *SHAPES)
OPTIONS = (
    "image_size",
    "num_train",
    "num_test",
    "max_objects",
    "seed",
    "text_length",
    "tokenizer",
    "tokenizer_path",
)
PHRASINGS = {1: 2, 2: 4}  # phrasings per number of shapes (see `captions`)

_STREAM = 3  # the last part of every item's seed
_JITTER = 12  # colour jitter per channel
_RADIUS = {0: (0.10, 0.13), 1: (0.18, 0.22)}  # half the size across, as a share of the side
_TILT = math.radians(15)
_GAP = 2  # pixels between two shapes side by side
_NOISE = 3.0


def word_tokenizer(length: int = 16, path: str | None = None) -> WordTokenizer:
    """The "shapes_words" tokenizer: `VOCABULARY`, CLIP's layout (see `jaxvision.data.tokenizers`:
    0 pad, 1 unknown, 2..19 the words, 20 SOT, 21 EOT)."""
    if path is not None:
        raise UserError("tokenizer 'shapes_words' reads no file: drop tokenizer_path")
    return WordTokenizer(VOCABULARY, length)


def open_shapes_captions(
    image_size: int = 64,
    num_train: int = 10000,
    num_test: int = 1000,
    max_objects: int = 2,
    seed: int = 0,
    text_length: int = 16,
    tokenizer: str = "shapes_words",
    tokenizer_path: str | None = None,
) -> Dataset:
    """The captioned shapes (see the module docstring); nothing is drawn until an item is read.

    Args:
        image_size: side of the square images, at least 32.
        num_train, num_test: images per split.
        max_objects: 2 (one shape in even items, two in odd ones) or 1 (one everywhere).
        seed: fixes every image and caption; two seeds give unrelated sets.
        text_length: ids per caption in `tokens`.
        tokenizer, tokenizer_path: what makes `tokens` (`jaxvision.data.tokenizers`).
    """
    if int(image_size) < 32:
        raise UserError(f"shapes_captions image_size must be at least 32, got {image_size}")
    if int(num_train) < 1 or int(num_test) < 1:
        raise UserError(
            f"shapes_captions needs num_train and num_test >= 1, got {num_train}, {num_test}"
        )
    if int(max_objects) not in (1, 2):
        raise UserError(f"shapes_captions max_objects must be 1 or 2, got {max_objects}")
    tokens = make_tokenizer(tokenizer, length=int(text_length), path=tokenizer_path)
    kwargs = dict(
        image_size=int(image_size), max_objects=int(max_objects), seed=int(seed), tokenizer=tokens
    )
    return Dataset(
        train=CaptionedShapesSource("train", int(num_train), **kwargs),
        test=CaptionedShapesSource("test", int(num_test), **kwargs),
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=int(image_size),
    )


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("shapes_captions", options=...): `open_shapes_captions`'s arguments."""
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for 'shapes_captions': use "
            f"{', '.join(OPTIONS)}"
        )
    return open_shapes_captions(**request.options)


class CaptionedShapesSource(shapes.ShapesSource):
    """One split: item `i` is the record of the module docstring, drawn on access and kept."""

    def __init__(
        self, split: str, length: int, *, image_size: int, max_objects: int, seed: int, tokenizer
    ):
        super().__init__(split, length, image_size=image_size, max_objects=max_objects, seed=seed)
        self.tokenizer = tokenizer

    @property
    def num_objects(self) -> np.ndarray:
        """int64 [N]: shapes per item, without drawing any."""
        if self.max_objects == 1:
            return np.ones(self.length, np.int64)
        return 1 + np.arange(self.length) % 2

    def draw(self, index: int) -> dict:
        record = render(
            self.seed, shapes.SPLITS[self.split], index, self.image_size, self.max_objects
        )[0]
        record["tokens"] = self.tokenizer(record["text"])
        return record

    def objects(self, index: int) -> list[dict]:
        """Item `index`'s shapes, left to right, as `captions` takes them."""
        record = self[index]
        return objects_of(record)

    def captions(self, index: int) -> list[str]:
        """Every phrasing of item `index` (its `text` among them)."""
        return captions(self.objects(index))


def objects_of(record: dict) -> list[dict]:
    """A record's shapes, left to right: `{"colour", "shape", "size"}` names each."""
    return [
        {
            "colour": COLOURS[int(record["object_colours"][k])],
            "shape": SHAPES[int(record["object_shapes"][k])],
            "size": SIZES[int(record["object_sizes"][k])],
        }
        for k in range(int(record["num_objects"]))
    ]


def _name(thing: dict, sized: bool) -> str:
    words = ([thing["size"]] if sized else []) + [thing["colour"], thing["shape"]]
    article = "an" if words[0][0] in "aeiou" else "a"  # "an orange star"
    return " ".join([article, *words])


def caption(objects: list[dict], phrasing: int) -> str:
    """Phrasing `phrasing` (0 .. PHRASINGS[n] - 1) of `objects` (left to right, 1 or 2, as
    `objects_of` gives them): sizes named in odd phrasings; two shapes read left to right in
    phrasings 0 and 1, right to left ("B right of A") in 2 and 3."""
    sized = phrasing % 2 == 1
    if len(objects) == 1:
        return _name(objects[0], sized)
    left, right = (_name(o, sized) for o in objects)
    return f"{left} left of {right}" if phrasing < 2 else f"{right} right of {left}"


def captions(objects: list[dict]) -> list[str]:
    """Every phrasing of `objects`, in phrasing order."""
    return [caption(objects, p) for p in range(PHRASINGS[len(objects)])]


def foil(objects: list[dict], phrasing: int = 0) -> str:
    """The two-shape caption with the shapes' places swapped: false for the image."""
    if len(objects) != 2:
        raise ValueError(f"a foil swaps two shapes, got {len(objects)}")
    return caption(objects[::-1], phrasing)


# Each class as its one-shape caption ("a red circle", ..., "an orange cross"): zero-shot
# prompts that read as the training captions do.
CLASS_PROMPTS = tuple(
    caption([{"colour": c, "shape": s, "size": "small"}], 0) for c in COLOURS for s in SHAPES
)


def split_labels(split: str) -> tuple[int, ...]:
    """The colour-shape classes a split draws: the seen ones for train, all for test."""
    return SEEN_LABELS if split == "train" else tuple(range(len(CLASS_NAMES)))


def render(
    seed: int, split: int, index: int, size: int, max_objects: int = 2, noise: bool = True
) -> tuple[dict, np.ndarray]:
    """Draws item `index` of split number `split` (0 train, 1 test); returns (record without
    `tokens`, owner uint8 [S, S]: 1 + the row of the shape each pixel shows, 0 background)."""
    rng = np.random.default_rng([seed, split, index, _STREAM])
    labels = split_labels("train" if split == 0 else "test")
    count = 1 if max_objects == 1 or index % 2 == 0 else 2
    if count == 1:
        cycle = index if max_objects == 1 else index // 2
        chosen = [labels[cycle % len(labels)]]
    else:
        chosen = [int(k) for k in rng.choice(labels, 2, replace=False)]
    sizes = rng.integers(0, 2, count).tolist()
    outlines = [_outline(rng, k % len(SHAPES), s, size) for k, s in zip(chosen, sizes, strict=True)]
    corners = _place(rng, outlines, size)
    grey = rng.uniform(70, 190)
    background = tuple(int(round(grey + t)) for t in rng.uniform(-8, 8, 3))
    picture = Image.new("RGB", (size, size), background)
    owner_image = Image.new("L", (size, size), 0)
    draw, mark = ImageDraw.Draw(picture), ImageDraw.Draw(owner_image)
    for row, (label, points) in enumerate(zip(chosen, corners, strict=True)):
        rgb = RGB[label // len(SHAPES)] + rng.uniform(-_JITTER, _JITTER, 3)
        flat = points.ravel().tolist()
        draw.polygon(flat, fill=tuple(int(round(v)) for v in np.clip(rgb, 0, 255)))
        mark.polygon(flat, fill=row + 1)
    image = np.asarray(picture)
    if noise:  # a random window of a fixed noise image: 5x cheaper than fresh normals
        oy, ox = (int(v) for v in rng.integers(0, size, 2))
        noisy = image + _noise_bank(size)[oy : oy + size, ox : ox + size]  # int16
        image = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
    owner = np.asarray(owner_image)
    boxes = np.zeros((2, 4), np.float32)
    for row in range(count):
        mine = owner == row + 1
        rows, cols = np.flatnonzero(mine.any(1)), np.flatnonzero(mine.any(0))
        boxes[row] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    pad = [-1] * (2 - count)
    colours = [k // len(SHAPES) for k in chosen]
    kinds = [k % len(SHAPES) for k in chosen]
    record = {
        "image": image,
        "label": chosen[0],
        "num_objects": count,
        "held_out": any(k in HELD_OUT_LABELS for k in chosen),
        "object_classes": np.asarray(chosen + pad, np.int32),
        "object_colours": np.asarray(colours + pad, np.int32),
        "object_shapes": np.asarray(kinds + pad, np.int32),
        "object_sizes": np.asarray(sizes + pad, np.int32),
        "object_boxes": boxes,
    }
    phrasing = int(rng.integers(0, PHRASINGS[count]))
    record["text"] = caption(objects_of(record), phrasing)
    return record, owner


_CIRCLE = np.stack([np.cos(np.arange(32) * np.pi / 16), np.sin(np.arange(32) * np.pi / 16)], 1)
_SQUARE = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float) * 0.85
_TRIANGLE = np.array([(0, -1), (0.95, 0.75), (-0.95, 0.75)], float)
_STAR_ANGLES = np.arange(10) * np.pi / 5 - np.pi / 2
_STAR = (
    np.stack([np.cos(_STAR_ANGLES), np.sin(_STAR_ANGLES)], 1)
    * np.where(np.arange(10) % 2, 0.45, 1.0)[:, None]
)
_ARM = 0.34  # half the thickness of a cross's arms
_CROSS = np.array(
    [(-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM)]
    + [(_ARM, 1), (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM)],
    float,
)
_OUTLINES = (_CIRCLE, _SQUARE, _TRIANGLE, _STAR, _CROSS)


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """int16 [2S, 2S, 3]: Gaussian pixel noise (sigma `_NOISE`), the same in every process."""
    unit = np.random.default_rng(20261208).standard_normal((2 * size, 2 * size, 3))
    return np.rint(_NOISE * unit).astype(np.int16)


def _outline(rng: np.random.Generator, shape: int, size_class: int, side: int) -> np.ndarray:
    """float [V, 2]: the polygon of `shape` around (0, 0), scaled and turned."""
    low, high = _RADIUS[size_class]
    radius = side * rng.uniform(low, high)
    angle = 0.0 if shape == 0 else rng.uniform(-_TILT, _TILT)
    c, s = math.cos(angle), math.sin(angle)
    return _OUTLINES[shape] @ (radius * np.array([[c, s], [-s, c]]))


def _place(rng: np.random.Generator, outlines: list[np.ndarray], side: int) -> list[np.ndarray]:
    """The outlines moved into the image: one anywhere it fits, two side by side, the first
    wholly left of the second with at least `_GAP` pixels between their extents."""
    lows = [o.min(0) for o in outlines]
    spans = [o.max(0) - o.min(0) + 1 for o in outlines]
    free_x = side - 2 - sum(float(s[0]) for s in spans) - _GAP * (len(outlines) - 1)
    cuts = np.sort(rng.uniform(0, max(free_x, 0.0), len(outlines)))
    placed, x = [], 1.0
    for k, (outline, low, span) in enumerate(zip(outlines, lows, spans, strict=True)):
        x += float(cuts[k] - (cuts[k - 1] if k else 0.0))
        y = 1.0 + rng.uniform(0, max(side - 2 - float(span[1]), 0.0))
        placed.append(outline - low + (x, y))
        x += float(span[0]) + _GAP
    return placed
