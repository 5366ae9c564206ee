"""Pictures of detections: boxes with class-coloured outlines and "name score" tags, and a grid
of pictures.

Plain PIL on host numpy images, no matplotlib: used by the detection evaluator's report, by
`jaxvision evaluate --images` and by the web service, which draw one image at a time.
"""

import colorsys
import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The tag's margin around its text, in pixels.
TAG_PADDING = 2


def class_color(class_id: int) -> tuple[int, int, int]:
    """The (r, g, b) colour of a class: hues a golden-ratio turn apart, so that neighbouring ids
    (which tend to be related classes) differ strongly, with three brightness levels so that
    classes ~8 ids apart whose hues come close still differ."""
    hue = (int(class_id) * 0.6180339887498949) % 1.0
    value = (0.95, 0.75, 0.55)[int(class_id) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be [H, W, 3] (or [H, W] / [H, W, 1]), got {image.shape}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


@functools.cache
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _dashed_rectangle(draw, x1, y1, x2, y2, color, width):
    """The outline of [x1, x2] x [y1, y2] (inclusive pixels, `width` thick inwards) as dashes."""
    dash = max(4, 3 * width)
    for x in range(x1, x2 + 1, 2 * dash):
        end = min(x + dash - 1, x2)
        draw.rectangle([x, y1, end, min(y1 + width - 1, y2)], fill=color)
        draw.rectangle([x, max(y2 - width + 1, y1), end, y2], fill=color)
    for y in range(y1, y2 + 1, 2 * dash):
        end = min(y + dash - 1, y2)
        draw.rectangle([x1, y, min(x1 + width - 1, x2), end], fill=color)
        draw.rectangle([max(x2 - width + 1, x1), y, x2, end], fill=color)


def _tag(draw, text, x1, y1, color, image_width, font):
    """A filled tag with `text` just above the box's top-left corner; inside the box's top edge
    when there is no room above, and moved left when it would leave the image on the right."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tag_width = right - left + 2 * TAG_PADDING
    tag_height = bottom - top + 2 * TAG_PADDING
    x = max(0, min(x1, image_width - tag_width))
    y = y1 - tag_height if y1 >= tag_height else y1
    draw.rectangle([x, y, x + tag_width - 1, y + tag_height - 1], fill=color)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    draw.text((x + TAG_PADDING - left, y + TAG_PADDING - top), text, fill=ink, font=font)


def draw_detections(
    image,
    boxes,
    classes,
    scores=None,
    class_names: Sequence[str] | None = None,
    *,
    score_threshold: float = 0.0,
    width: int = 2,
    dashed: bool = False,
    labels: bool = True,
) -> np.ndarray:
    """Draws boxes on a copy of `image`, each outlined in its class's colour (`class_color`).

    image: uint8 [H, W, 3] ([H, W] and [H, W, 1] are drawn in grey). boxes: [N, 4] float
    (x1, y1, x2, y2) pixels of `image`, clipped to it; boxes outside it or not finite are
    skipped. classes: [N] int. scores: [N] float or None (ground truth: the tag is the name).
    class_names: name of each class index (None, or an index past its end: the number).
    score_threshold: boxes scoring below it are left out. width: outline thickness in pixels,
    drawn inside the box. dashed: dashed outlines (e.g. ground truth under detections).
    labels: a "name 0.87" tag in the class colour above each box, kept inside the image, its
    text ~1/40 of the image's shorter side high (10 px at least).

    Returns uint8 [H, W, 3]; the lowest scores are drawn first so the best lie on top.
    """
    picture = Image.fromarray(_as_rgb(image).copy())
    height, image_width = picture.height, picture.width
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if classes.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {classes.shape[0]} classes")
    if scores is not None:
        scores = np.asarray(scores, np.float64).reshape(-1)
        if scores.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.arange(boxes.shape[0]) if scores is None else np.argsort(scores, kind="stable")
    draw = ImageDraw.Draw(picture)
    # Readable on a thumbnail and on a full-size photograph alike.
    font = _font(max(10, min(height, image_width) // 40))
    for i in order:
        if scores is not None and not scores[i] >= score_threshold:
            continue
        x1, y1, x2, y2 = boxes[i]
        if not np.isfinite(boxes[i]).all() or x2 <= 0 or y2 <= 0:
            continue
        if x1 >= image_width or y1 >= height:
            continue
        # Inclusive pixel corners: a box [x1, x2) covers columns x1 .. x2 - 1.
        left = int(np.clip(round(x1), 0, image_width - 1))
        top = int(np.clip(round(y1), 0, height - 1))
        right = max(int(np.clip(round(x2) - 1, 0, image_width - 1)), left)
        bottom = max(int(np.clip(round(y2) - 1, 0, height - 1)), top)
        color = class_color(classes[i])
        if dashed:
            _dashed_rectangle(draw, left, top, right, bottom, color, width)
        else:
            draw.rectangle([left, top, right, bottom], outline=color, width=width)
        if labels:
            c = int(classes[i])
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else c
            text = str(name) if scores is None else f"{name} {scores[i]:.2f}"
            _tag(draw, text, left, top, color, image_width, font)
    return np.asarray(picture)


def image_grid(images: Sequence, columns: int, *, spacing: int = 4, fill: int = 255) -> np.ndarray:
    """Lays images out row by row, `columns` to a row, in cells of the largest height and width.

    images: uint8 [H_i, W_i, 3] of any sizes (grey ones drawn as RGB), each at the top-left of
    its cell. spacing: pixels between cells. fill: the grey level of the gaps and the padding.

    Returns uint8 [rows * Hmax + (rows - 1) * spacing, cols * Wmax + (cols - 1) * spacing, 3]
    with cols = min(columns, len(images)).
    """
    images = [_as_rgb(image) for image in images]
    if not images:
        raise ValueError("image_grid needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    cell_h = max(image.shape[0] for image in images)
    cell_w = max(image.shape[1] for image in images)
    grid = np.full(
        (rows * cell_h + (rows - 1) * spacing, columns * cell_w + (columns - 1) * spacing, 3),
        fill,
        np.uint8,
    )
    for index, image in enumerate(images):
        top = (index // columns) * (cell_h + spacing)
        left = (index % columns) * (cell_w + spacing)
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid
