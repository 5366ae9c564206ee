"""Why did a classifier say that? Attributions for any classifier in the zoo, batched and jitted.

    from jaxvision.predictor import Predictor
    from jaxvision.explain import explain
    result = explain(Predictor.from_workdir("workdirs/digits"), [image], method="gradcam")
    result.heatmaps      # [N, S, S] float32, >= 0, over the model's input pixels
    result.attributions  # the method's raw output (see METHODS)

Methods (`METHODS`; options in brackets):
- "gradient", "input_x_gradient": d logit / dx, and x times it.
- "smoothgrad" [samples=25, noise_level=0.15, seed, chunk]: the mean gradient of noisy copies.
- "integrated_gradients" [baseline="black"|"blurred"|"uniform"|"mean", steps=64,
  rule="gausslegendre"|"riemann_trapezoid", chunk=16, blur_sigma]: path integral from a
  baseline; `result.completeness` says how far the attributions' sum is from f(x) - f(x').
- "gradcam", "gradcam_plus_plus" [layer]: from a named feature map (default: the last;
  ViTs through their patch tokens).
- "occlusion" [window, stride, fill, chunk]: the logit's drop when a window is hidden.
- "attention_rollout" [head_fusion="mean"|"max", residual=0.5]: ViTs only, class-agnostic.

Pixel methods' raw attributions are [N, S, S, C] with respect to the normalised input; their
heat map sums |attribution| over channels (gradient, smoothgrad) or keeps the positive part of
the channel sum (input_x_gradient, integrated_gradients: evidence for the class). Map methods
give [N, h, w], upsampled bilinearly to S x S for the heat map. Heat maps are scaled to
[0, 1] per image for display; `attributions` keep the raw values.
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.explain.core import ModelFunction, logits_of, resolve_targets
from jaxvision.registry import Registry

# name -> method(fn, x, targets, **options), imported on first use. A new method registers
# itself: `@METHODS.register("my_method")`.
METHODS = Registry("method")
METHODS.declare("gradient", "jaxvision.explain.gradients:gradient")
METHODS.declare("input_x_gradient", "jaxvision.explain.gradients:input_x_gradient")
METHODS.declare("smoothgrad", "jaxvision.explain.gradients:smoothgrad")
METHODS.declare("integrated_gradients", "jaxvision.explain.gradients:integrated_gradients")
METHODS.declare("gradcam", "jaxvision.explain.cam:gradcam")
METHODS.declare("gradcam_plus_plus", "jaxvision.explain.cam:gradcam_plus_plus")
METHODS.declare("occlusion", "jaxvision.explain.occlusion:occlusion")
METHODS.declare("attention_rollout", "jaxvision.explain.cam:attention_rollout")
_ABSOLUTE = ("gradient", "smoothgrad")  # heat map: sum of |a| over channels
_SIGNED = ("input_x_gradient", "integrated_gradients")  # heat map: positive part of the sum


@dataclasses.dataclass
class Explanation:
    """One method's answer for N images (numpy arrays)."""

    method: str
    images: np.ndarray  # uint8 [N, S, S, C]: the preprocessed inputs the maps are over
    targets: np.ndarray  # int32 [N]: the class explained
    probabilities: np.ndarray  # float32 [N]: the model's probability of that class
    attributions: np.ndarray  # the method's raw output
    heatmaps: np.ndarray  # float32 [N, S, S] in [0, 1]
    completeness: dict | None = None  # integrated_gradients: {"sum", "delta", "error"} [N]


def heatmaps(method: str, attributions, side: int) -> np.ndarray:
    """[N, S, S] float32 in [0, 1] per image from a method's raw attributions."""
    a = jnp.asarray(attributions, jnp.float32)
    if method in _ABSOLUTE:
        a = jnp.sum(jnp.abs(a), axis=-1)
    elif method in _SIGNED:
        a = jax.nn.relu(jnp.sum(a, axis=-1))
    if a.shape[1:] != (side, side):
        a = jax.image.resize(a, (a.shape[0], side, side), "bilinear")
    low = a.min(axis=(1, 2), keepdims=True)
    high = a.max(axis=(1, 2), keepdims=True)
    return np.asarray((a - low) / jnp.maximum(high - low, 1e-12), np.float32)


def explain(predictor, images, method: str = "gradcam", target="top1", **options) -> Explanation:
    """Explains the classifier `predictor` (a jaxvision Predictor) on uint8 images of any size.

    target: "top1" (each image's predicted class), a class name or index, or one per image.
    options: the method's (see the module docstring); an unknown one is a UserError.
    """
    call = METHODS[method]  # an unknown name: a UserError with the closest one
    if method == "integrated_gradients" and "baseline" in options:
        options["baseline_kind"] = options.pop("baseline")
    accepted = list(inspect.signature(call).parameters)[3:]  # after fn, x, targets
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = ", ".join(accepted) or "(none)"
        raise UserError(f"{method} has no option '{unknown[0]}'; its options are {known}")
    fn = predictor if isinstance(predictor, ModelFunction) else ModelFunction.of(predictor)
    u8, x = fn.inputs(images)
    targets = resolve_targets(fn, x, target)
    result = call(fn, x, targets, **options)
    completeness = None
    if method == "integrated_gradients":
        result, completeness = result
    probs = jax.nn.softmax(fn.jit(logits_of)(x))
    chosen = np.asarray(jnp.take_along_axis(probs, jnp.asarray(targets)[:, None], -1)[:, 0])
    attributions = np.asarray(result, np.float32)
    return Explanation(
        method=method,
        images=np.asarray(u8),
        targets=targets,
        probabilities=chosen,
        attributions=attributions,
        heatmaps=heatmaps(method, attributions, x.shape[1]),
        completeness=completeness,
    )
