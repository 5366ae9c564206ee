"""Small layers shared by several model families, and the taps on named feature maps."""

import contextlib
import contextvars
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def torch_batch_norm(train: bool, dtype: Any, epsilon: float = 1e-5):
    """BatchNorm as torch's BatchNorm2d, as a module factory: momentum 0.9 here is torch's 0.1,
    statistics and parameters in float32 whatever the compute `dtype`, and the two-pass
    variance (E[x²] - E[x]² cancels badly after a ReLU, where the mean dwarfs the spread)."""
    return functools.partial(
        nn.BatchNorm,
        use_running_average=not train,
        momentum=0.9,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_fast_variance=False,
    )


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample. x: [B, ...] → [B, ...].

    Kept samples are scaled by 1/(1 - rate), as timm, so the expected value is unchanged.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


# The taps of the innermost `tapping` context: {name: perturbation} and the values seen.
_TAPS: contextvars.ContextVar = contextvars.ContextVar("jaxvision_taps", default=None)


class _Taps:
    def __init__(self, perturbations: dict, attention: bool):
        self.perturbations, self.attention = perturbations, attention
        self.seen: dict[str, jax.Array] = {}


def tap(name: str, x: jnp.ndarray) -> jnp.ndarray:
    """A named feature map on its way through the model: `x` itself, except inside
    `tapping({name: delta})`, where it is recorded and `delta` is added. Models pass every map
    their `features=True` dict names through it, so that the gradient of an output with
    respect to a map is the gradient with respect to its delta, with no change to the model's
    variables (jaxvision.explain's Grad-CAM)."""
    taps = _TAPS.get()
    if taps is None or name not in taps.perturbations:
        return x
    taps.seen[name] = x
    return x + taps.perturbations[name].astype(x.dtype)


def wants_attention() -> bool:
    """Whether the innermost `tapping` asks attention layers for their weights."""
    taps = _TAPS.get()
    return taps is not None and taps.attention


def record_attention(path: tuple[str, ...], weights: jnp.ndarray) -> None:
    """Keeps an attention layer's weights [B, heads, N, N] as "attention/<its module path>"."""
    _TAPS.get().seen["attention/" + "/".join(path)] = weights


@contextlib.contextmanager
def tapping(perturbations: dict, attention: bool = False):
    """Within it (while a model is traced or run), `tap(name, x)` adds perturbations[name] to
    the map `name` and records the map; with `attention`, attention layers compute their
    weights explicitly and record them. Yields {name: map seen}, filled as the model runs.
    Read inside the traced function, so jit caches stay correct: a function that taps always
    traces with its taps."""
    taps = _Taps(perturbations, attention)
    token = _TAPS.set(taps)
    try:
        yield taps.seen
    finally:
        _TAPS.reset(token)
