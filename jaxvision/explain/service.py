"""Grad-CAM as one compiled function of (variables, uint8 images), for the HTTP service and
exported bundles: `POST /v1/explain` answers with it.

    forward, layer = gradcam_forward(predictor)        # a workdir's Predictor
    forward(variables, images)  # images uint8 [B, S, S, C], preprocessed -> {"heatmaps":
                                # [B, S, S] float32 in [0, 1], "targets": [B] int32 (top-1),
                                # "probabilities": [B] float32}

`Explainer` runs it on images of any size: preprocessing, batch buckets as the Predictor's,
and where each heat map lies in its image (the preprocessing's crop box).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.explain import cam
from jaxvision.explain.core import ModelFunction


def gradcam_forward(predictor, layer: str | None = None):
    """(forward, the layer it reads) for a workdir's classifier `predictor`. A task may
    explain itself otherwise (its `gradcam_forward(predictor, layer)`: a quantized model's is
    Grad-CAM of its float values)."""
    own = getattr(getattr(predictor, "task", None), "gradcam_forward", None)
    if own is not None:
        return own(predictor, layer)
    fn = ModelFunction.of(predictor)
    size, channels = predictor.image_size, predictor.record["channels"]
    layer = layer or cam.default_layer(fn, jnp.zeros((1, size, size, channels), jnp.float32))

    def forward(variables, images):
        f = fn.with_variables(variables)
        x = f.normalize(images)
        logits = f.logits(x)
        targets = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        probabilities = jnp.take_along_axis(jax.nn.softmax(logits), targets[:, None], -1)[:, 0]
        maps = cam._gradcam(f, x, targets, layer)
        maps = jax.image.resize(maps, (maps.shape[0], size, size), "bilinear")
        low = maps.min(axis=(1, 2), keepdims=True)
        high = maps.max(axis=(1, 2), keepdims=True)
        heatmaps = (maps - low) / jnp.maximum(high - low, 1e-12)
        return {"heatmaps": heatmaps, "targets": targets, "probabilities": probabilities}

    return forward, layer


def crop_box(height: int, width: int, crop_ratio: float) -> list[float]:
    """Where the preprocessed S x S input lies in an H x W image, (x1, y1, x2, y2) pixels: the
    central square of side min(H, W) * crop_ratio (`transforms.resize_center_crop`)."""
    side = min(height, width) * crop_ratio
    top, left = (height - side) / 2, (width - side) / 2
    return [left, top, left + side, top + side]


class Explainer:
    """Grad-CAM of `predictor` (a Predictor or a bundle) on images of any size: `forward`
    (variables, padded batch) -> outputs, run per bucket like the Predictor's forward."""

    def __init__(self, predictor, forward, layer: str):
        self.predictor, self.layer = predictor, layer
        self._forward = forward

    @classmethod
    def of(cls, predictor) -> "Explainer":
        forward, layer = gradcam_forward(predictor)
        return cls(predictor, jax.jit(forward), layer)

    def explain(self, images) -> dict:
        """{"heatmaps": [N, S, S], "targets", "probabilities": [N], "boxes": [N, 4] (each heat
        map's square in its image's pixels)} as numpy."""
        predictor = self.predictor
        inputs = predictor.preprocess(list(images))[0]
        out = predictor.run_bucketed(lambda v, batch: self._forward(v, batch["images"]), inputs)
        crop = predictor.record["crop_ratio"]
        out["boxes"] = np.array(
            [crop_box(*np.shape(image)[:2], crop) for image in images], np.float32
        )
        return out
