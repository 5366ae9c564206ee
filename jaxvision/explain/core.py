"""What every explanation method works on: a classifier as a function of its normalised input.

`ModelFunction.of(predictor)` turns a workdir's jaxvision Predictor (not a bundle's: the
methods need the model's code for gradients) into

    fn.logits(x)         x: [B, S, S, C] float32 normalised input -> [B, K] float32 logits
    fn.normalize(u8)     uint8 [B, S, S, C] (the Predictor's preprocessing) -> x
    fn.inputs(images)    uint8 images of any size -> (u8 [B, S, S, C], x)

Attributions are taken with respect to x, the tensor the network reads (as captum and
pytorch-grad-cam do on a normalised torch tensor); heat maps are over its S x S pixels.
"""

import copy
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.models.layers import tapping
from jaxvision.tasks.classification import apply_model


class ModelFunction:
    """model: a zoo classifier module; variables: its {"params", ...}; mean / std: the input
    normalisation (0..255 scale); preprocess: uint8 images -> uint8 [B, S, S, C] (default:
    none: the images already are the model's input)."""

    def __init__(
        self, model, variables: dict, *, mean, std, class_names, image_size, channels, preprocess
    ):
        self.model, self.variables = model, variables
        self.mean = jnp.asarray(mean, jnp.float32)
        self.std = jnp.asarray(std, jnp.float32)
        self.class_names = list(class_names)
        self.image_size, self.channels = image_size, channels
        self.preprocess = preprocess
        self._programs = {}  # f -> its jitted program (`jit`), shared with `with_variables` copies

    @classmethod
    def of(cls, predictor) -> "ModelFunction":
        """The classifier of a jaxvision Predictor, with its preprocessing."""
        if predictor.kind != "classification":
            raise UserError(
                f"explanations are for classifiers; this model's task is {predictor.kind}"
            )
        if not hasattr(predictor, "task"):
            raise UserError(
                "explanations need the model's code for its gradients: give the training "
                "workdir (--workdir=DIR), not an exported bundle"
            )
        return cls(
            predictor.task.model,
            predictor.variables,
            mean=predictor.task.mean,
            std=predictor.task.std,
            class_names=predictor.class_names,
            image_size=predictor.image_size,
            channels=predictor.record["channels"],
            preprocess=lambda images: predictor.preprocess(images)[0]["images"],
        )

    def with_variables(self, variables: dict) -> "ModelFunction":
        """The same function with other weights (the sanity checks' randomised models)."""
        other = copy.copy(self)
        other.variables = variables
        return other

    def jit(self, f):
        """`f(fn, *args)` jitted with this function's weights as an argument (not constants of
        the program), so other weights of the same model (`with_variables`: the sanity checks'
        randomised models) run the same program: compiled once for a module-level `f` (kept
        here, shared by the copies), found in JAX's compilation cache (when one is set) for a
        closure. Arrays `f` closes over still become constants of the program."""
        run = self._programs.get(f)
        if run is None:
            run = jax.jit(lambda variables, *args: f(self.with_variables(variables), *args))
            if f.__qualname__ == f.__name__:  # module level: the same object every call
                self._programs[f] = run
        return functools.partial(run, self.variables)

    def normalize(self, images_u8) -> jax.Array:
        return (jnp.asarray(images_u8, jnp.float32) - self.mean) / self.std

    def denormalize(self, x) -> jax.Array:
        """x -> float pixels 0..255 (for baselines built in pixel space)."""
        return x * self.std + self.mean

    def inputs(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, jax.Array]:
        """uint8 images of any size -> (the Predictor's preprocessed uint8 [B, S, S, C], x)."""
        u8 = np.asarray(self.preprocess(list(images)))
        return u8, self.normalize(u8)

    def logits(self, x: jax.Array) -> jax.Array:
        return apply_model(self.model, self.variables, x, train=False)[0]

    def tapped(self, x: jax.Array, perturbations: dict, attention: bool = False):
        """(logits, {name: map seen}) with perturbations[name] added to the named maps."""
        with tapping(perturbations, attention=attention) as seen:
            logits = self.logits(x)
        return logits, dict(seen)

    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.model.feature_names())


def logits_of(fn: ModelFunction, x) -> jax.Array:
    return fn.logits(x)


def resolve_targets(fn: ModelFunction, x: jax.Array, target) -> np.ndarray:
    """Class index per image: "top1" (each image's prediction), a class name, an index, or one
    of those per image."""
    count = x.shape[0]
    if target is None or (isinstance(target, str) and target == "top1"):
        return np.asarray(jnp.argmax(fn.jit(logits_of)(x), axis=-1), np.int32)
    targets = list(target) if isinstance(target, list | tuple | np.ndarray) else [target] * count
    if len(targets) != count:
        raise UserError(f"{len(targets)} targets for {count} images: give one, or one per image")
    names = fn.class_names
    out = []
    for t in targets:
        if isinstance(t, str) and t in names:
            out.append(names.index(t))
        elif isinstance(t, str) and t.isdigit() or isinstance(t, int | np.integer):
            if not 0 <= int(t) < len(names):
                raise UserError(f"target {t} is out of range: the model has {len(names)} classes")
            out.append(int(t))
        else:
            raise UserError(
                f"target {t!r} is not 'top1', a class index or one of the classes "
                f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
            )
    return np.asarray(out, np.int32)


def target_logit(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """[B] the logit of each image's target class; summed, its gradient is per image."""
    return jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]


def chunked(values: np.ndarray, weights: np.ndarray, chunk: int):
    """(values, weights) padded with zero-weight rows to whole chunks, as [n, chunk, ...]."""
    pad = -len(values) % chunk
    values = np.concatenate([values, np.repeat(values[-1:], pad, 0)])
    weights = np.concatenate([weights, np.zeros(pad, weights.dtype)])
    return values.reshape(-1, chunk, *values.shape[1:]), weights.reshape(-1, chunk)
