"""Pixel attributions from input gradients: vanilla gradient, gradient x input, SmoothGrad and
Integrated Gradients. Each takes the ModelFunction `fn`, the normalised inputs x [B, S, S, C]
and the target classes [B], and returns attributions [B, S, S, C] float32 with respect to x.

Sampled methods (SmoothGrad's noisy copies, IG's path points) run in chunks of `chunk` points
inside one `lax.scan`: memory holds one chunk of B x chunk forward/backward passes whatever
the number of steps.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.explain.core import ModelFunction, chunked, target_logit

BASELINES = ("black", "blurred", "uniform", "mean")
RULES = ("riemann_trapezoid", "gausslegendre")


def _target_grad(fn: ModelFunction):
    """x [B, ...], targets [B] -> d(target logit of each image) / dx, [B, ...]."""
    return jax.grad(lambda x, t: jnp.sum(target_logit(fn.logits(x), t)))


def gradient(fn: ModelFunction, x, targets) -> jax.Array:
    """d logit[target] / dx (Simonyan et al. 2014; captum's Saliency without the abs)."""
    return fn.jit(_gradient)(x, jnp.asarray(targets))


def _gradient(fn: ModelFunction, x, targets) -> jax.Array:
    return _target_grad(fn)(x, targets)


def input_x_gradient(fn: ModelFunction, x, targets) -> jax.Array:
    """x * d logit[target] / dx (captum's InputXGradient)."""
    return x * gradient(fn, x, targets)


def _weighted_grad_sum(fn: ModelFunction, points_fn):
    """run(x, targets, values, weights) = sum_i weights[i] * grad at points_fn(x, values[i]):
    [B, ...], with values [n, chunk, ...] and weights [n, chunk] (`chunked`): a chunk of points
    at a time."""
    grad = _target_grad(fn)

    def run(x, targets, values, w):
        def step(total, chunk_values):
            vals, ws = chunk_values
            points = jax.vmap(lambda v: points_fn(x, v))(vals)  # [chunk, B, ...]
            flat = points.reshape(-1, *x.shape[1:])
            g = grad(flat, jnp.tile(targets, vals.shape[0])).reshape(points.shape)
            return total + jnp.tensordot(ws, g, axes=1), None

        total, _ = jax.lax.scan(step, jnp.zeros_like(x), (values, w))
        return total

    return run


def smoothgrad(
    fn: ModelFunction,
    x,
    targets,
    *,
    samples: int = 25,
    noise_level: float = 0.15,
    seed: int = 0,
    chunk: int = 8,
) -> jax.Array:
    """The mean gradient over `samples` copies of x with Gaussian noise of standard deviation
    noise_level x (max - min of each image) (Smilkov et al. 2017)."""
    if samples < 1 or noise_level < 0:
        raise UserError(f"smoothgrad needs samples >= 1 and noise_level >= 0, got {samples}")
    keys = np.asarray(jax.random.split(jax.random.key_data(jax.random.key(seed)), samples))

    def noisy(x, key):
        axes = tuple(range(1, x.ndim))
        sigma = noise_level * (jnp.max(x, axis=axes) - jnp.min(x, axis=axes))
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        key = jax.random.wrap_key_data(key)
        return x + sigma * jax.random.normal(key, x.shape, x.dtype)

    weights = np.full(samples, 1 / samples, np.float32)
    run = fn.jit(lambda fn, *args: _weighted_grad_sum(fn, noisy)(*args))
    return run(x, jnp.asarray(targets), *chunked(keys, weights, chunk))


def path_points(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) on [0, 1] for IG's path integral: "riemann_trapezoid" (steps points
    from 0 to 1, weights 1 / (steps - 1), the end points at half weight: the trapezoid rule,
    whose weights sum to 1; captum's weighs 1 / steps, summing to (steps - 1) / steps) and
    "gausslegendre" (Gauss-Legendre nodes and weights mapped from [-1, 1], as captum's)."""
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise UserError("riemann_trapezoid needs steps >= 2")
        alphas = np.linspace(0, 1, steps)
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
    elif rule == "gausslegendre":
        if steps < 1:
            raise UserError("gausslegendre needs steps >= 1")
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, w / 2
    else:
        raise UserError(f"unknown integration rule {rule!r}: choose one of {', '.join(RULES)}")
    return alphas.astype(np.float32), weights.astype(np.float32)


def baseline(fn: ModelFunction, x, kind: str, *, seed: int = 0, blur_sigma: float = 0.0):
    """IG's reference input in x's space: "black" (zero pixels), "uniform" (pixels drawn
    uniformly from 0..255, per image and channel), "blurred" (the image under a Gaussian blur
    of `blur_sigma` pixels, default a tenth of its side) or "mean" (the dataset mean: x = 0,
    captum's default baseline)."""
    if kind == "mean":
        return jnp.zeros_like(x)
    if kind == "black":
        return jnp.broadcast_to(fn.normalize(jnp.zeros((1,) * x.ndim)), x.shape)
    if kind == "uniform":
        pixels = jax.random.uniform(jax.random.key(seed), x.shape, minval=0, maxval=255)
        return fn.normalize(pixels)
    if kind == "blurred":
        sigma = blur_sigma or x.shape[1] / 10
        return fn.normalize(gaussian_blur(fn.denormalize(x), sigma))
    raise UserError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")


def gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
    """[B, H, W, C] blurred per channel by a Gaussian of `sigma` pixels, edges reflected."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), images.dtype)
    for axis in (1, 2):
        size = images.shape[axis]
        pad = [(0, 0)] * images.ndim
        pad[axis] = (min(radius, size - 1),) * 2
        padded = jnp.pad(images, pad, mode="reflect")
        if radius > size - 1:  # too small to reflect that far: repeat the edge beyond
            extra = [(0, 0)] * images.ndim
            extra[axis] = (radius - size + 1,) * 2
            padded = jnp.pad(padded, extra, mode="edge")
        moved = jnp.moveaxis(padded, axis, -1)
        out = jax.vmap(lambda row: jnp.convolve(row, taps, mode="valid"))(
            moved.reshape(-1, moved.shape[-1])
        ).reshape(*moved.shape[:-1], size)
        images = jnp.moveaxis(out, -1, axis)
    return images


def integrated_gradients(
    fn: ModelFunction,
    x,
    targets,
    *,
    baseline_kind: str = "black",
    steps: int = 64,
    rule: str = "gausslegendre",
    chunk: int = 16,
    seed: int = 0,
    blur_sigma: float = 0.0,
) -> tuple[jax.Array, dict]:
    """(x - x') * integral over a in [0, 1] of the gradient at x' + a (x - x') (Sundararajan
    et al. 2017), with x' = baseline(baseline_kind). Also returns the completeness check per
    image: {"sum": sum of the attributions, "delta": f(x) - f(x'), "error": |sum - delta|}, f
    the target logit (the axiom: sum == delta)."""
    reference = baseline(fn, x, baseline_kind, seed=seed, blur_sigma=blur_sigma)
    alphas, weights = path_points(steps, rule)

    def path(fn, x, reference, *args):
        def point(x, alpha):
            return reference + alpha * (x - reference)

        return _weighted_grad_sum(fn, point)(x, *args)

    targets = jnp.asarray(targets)
    total = fn.jit(path)(x, reference, targets, *chunked(alphas, weights, chunk))
    attributions = (x - reference) * total
    f = fn.jit(lambda fn, v, t: target_logit(fn.logits(v), t))
    delta = f(x, targets) - f(reference, targets)
    summed = jnp.sum(attributions, axis=tuple(range(1, x.ndim)))
    check = {"sum": summed, "delta": delta, "error": jnp.abs(summed - delta)}
    return attributions, jax.tree.map(np.asarray, check)
