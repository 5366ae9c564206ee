"""An explanation as a picture: the heat map over the image, with the explained label."""

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

MIN_SIDE = 224  # small inputs (8x8 digits) are drawn enlarged, pixel for pixel


def overlay(image: np.ndarray, heatmap: np.ndarray, caption: str, alpha: float = 0.5):
    """PIL image: `image` uint8 [S, S, C] beside itself under `heatmap` [S, S] in [0, 1] (jet
    colours at `alpha`), enlarged to at least MIN_SIDE, with `caption` above them."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    colours = colormaps["jet"](heatmap)[..., :3] * 255
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colours
    side_by_side = np.concatenate([rgb, np.clip(blended, 0, 255).astype(np.uint8)], axis=1)
    picture = Image.fromarray(side_by_side)
    scale = max(1, int(np.ceil(MIN_SIDE / picture.height)))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (picture.width, picture.height + 22), "white")
    canvas.paste(picture, (0, 22))
    ImageDraw.Draw(canvas).text((4, 4), caption, fill="black")
    return canvas


def heatmap_grid(
    images: np.ndarray,
    rows: list[tuple[str, np.ndarray]],
    boxes=None,
    scale: int = 2,
    alpha: float = 0.5,
    label_width: int = 150,
):
    """PIL image comparing methods on the same images: `images` uint8 [N, S, S, C] in the first
    row, then one row per (label, heat maps [N, S, S] in [0, 1]) over them (jet at `alpha`), the
    label at the row's left (`\\n` breaks it). Each map's maximum is marked with a cross and,
    with `boxes` (N arrays [k, 4], xyxy pixels), the boxes are outlined in white."""
    count, side = images.shape[0], images.shape[1]
    cell, gap = side * scale, 2
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    width = label_width + count * (cell + gap)
    canvas = Image.new("RGB", (width, (len(rows) + 1) * (cell + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, maps) in enumerate([("image", None), *rows]):
        top = r * (cell + gap)
        draw.multiline_text((4, top + 4), label, fill="black")
        for i in range(count):
            pixels = rgb[i].astype(np.float32)
            if maps is not None:
                pixels = (1 - alpha) * pixels + alpha * colormaps["jet"](maps[i])[..., :3] * 255
            tile = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            left = label_width + i * (cell + gap)
            canvas.paste(tile.resize((cell, cell), Image.NEAREST), (left, top))
            for x1, y1, x2, y2 in np.asarray([] if boxes is None else boxes[i]).reshape(-1, 4):
                corners = [left + x1 * scale, top + y1 * scale, left + x2 * scale - 1]
                draw.rectangle([*corners, top + y2 * scale - 1], outline="white")
            if maps is not None:
                y, x = np.unravel_index(np.argmax(maps[i]), maps[i].shape)
                cx, cy = left + (x + 0.5) * scale, top + (y + 0.5) * scale
                for dx, dy in ((4, 0), (0, 4)):
                    draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill="black", width=3)
                    draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill="white", width=1)
    return canvas
