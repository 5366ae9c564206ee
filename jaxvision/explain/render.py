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
