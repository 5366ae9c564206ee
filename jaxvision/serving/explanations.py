"""The answer of `POST /v1/explain`: per image, Grad-CAM of its top-1 class."""

import base64
import io

import numpy as np
from matplotlib import colormaps
from PIL import Image


def heatmap_png(heatmap: np.ndarray) -> str:
    """A data URL of the heat map [S, S] in [0, 1] as an RGBA PNG: jet colours, opacity
    growing with the heat (cold regions stay see-through), to lay over the image."""
    rgba = colormaps["jet"](heatmap)
    rgba[..., 3] = 0.15 + 0.55 * heatmap
    out = io.BytesIO()
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def explanations(predictor, explainer, images, outputs: dict) -> list[dict]:
    names = predictor.class_names
    answers = []
    for i in range(len(images)):
        heatmap = outputs["heatmaps"][i]
        answers.append(
            {
                "method": "gradcam",
                "layer": explainer.layer,
                "label": names[int(outputs["targets"][i])],
                "index": int(outputs["targets"][i]),
                "probability": float(outputs["probabilities"][i]),
                # Where the model's S x S input, and so the heat map, lies in the image.
                "box": [float(v) for v in outputs["boxes"][i]],
                "heatmap": np.round(heatmap, 4).tolist(),
                "heatmap_png": heatmap_png(heatmap),
            }
        )
    return answers
