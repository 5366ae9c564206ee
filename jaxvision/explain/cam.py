"""Explanations from a named feature map: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++
(Chattopadhyay et al. 2018), as pytorch-grad-cam computes them, and attention rollout for ViTs
(Abnar & Zuidema 2020).

The map is one of the model's `feature_names()` (jaxvision.models; default: `default_layer`),
reached through its `tap`: its activations A and the gradient G of the target logit with
respect to it come from one forward and backward pass, without changing the model. Token maps
[B, N, D] (ViT, Mixer) lose their class token and are laid out on the patch grid [B, g, g, D].
Returns the class activation maps [B, h, w] float32 at the map's resolution (before any
upsampling).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.explain.core import ModelFunction, target_logit


def default_layer(fn: ModelFunction, x) -> str:
    """The map Grad-CAM reads when none is named: the model's last (feature_names()[-1]) that
    is at least 4 x 4 on these inputs (an 8 x 8 digits ResNet's C5 is 1 x 1 and its C4 2 x 2:
    too coarse to locate anything; ResNet-50 at 224 reads C5, 7 x 7),
    except for a ViT that pools its class token, whose patch tokens reach the head only
    through the last block's attention: the output of the block before it."""
    names = fn.feature_names()
    if getattr(fn.model, "pool", None) == "token" and getattr(fn.model, "depth", 0) > 1:
        return f"tokens_{fn.model.depth - 2}"
    shapes = _map_shapes(fn, x)
    for name in reversed(names):
        shape = shapes[name].shape
        if len(shape) == 3 or min(shape[1:3]) >= 4:
            return name
    return names[-1]


def _map_shapes(fn: ModelFunction, x) -> dict:
    return jax.eval_shape(lambda x: fn.model.apply(fn.variables, x, train=False, features=True), x)


def _activations_and_grads(fn: ModelFunction, x, targets, layer: str):
    names = fn.feature_names()
    if layer not in names:
        raise UserError(
            f"layer {layer!r} is not one of this model's feature maps: {', '.join(names)}"
        )
    shape = _map_shapes(fn, x)[layer]
    zeros = jnp.zeros(shape.shape, jnp.float32)

    def objective(delta):
        logits, seen = fn.tapped(x, {layer: delta})
        return jnp.sum(target_logit(logits, targets)), seen[layer]

    grads, activations = jax.grad(objective, has_aux=True)(zeros)
    return _grid(fn, activations.astype(jnp.float32)), _grid(fn, grads)


def _grid(fn: ModelFunction, a: jax.Array) -> jax.Array:
    """[B, h, w, c] as is; tokens [B, N, D] without their prefix tokens -> [B, g, g, D]."""
    if a.ndim == 4:
        return a
    if a.ndim != 3:
        raise UserError(f"Grad-CAM needs a spatial map or tokens, got shape {a.shape}")
    side = int(np.sqrt(a.shape[1]))
    prefix = a.shape[1] - side * side
    if prefix < 0 or prefix > 1:
        raise UserError(f"{a.shape[1]} tokens are not a square grid (plus a class token)")
    return a[:, prefix:].reshape(a.shape[0], side, side, a.shape[-1])


def gradcam(fn: ModelFunction, x, targets, *, layer: str | None = None) -> jax.Array:
    """ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of G_k: [B, h, w]."""
    layer = layer or default_layer(fn, x)
    run = fn.jit(lambda fn, x, t: _gradcam(fn, x, t, layer))
    return run(x, jnp.asarray(targets))


def _gradcam(fn, x, targets, layer):
    activations, grads = _activations_and_grads(fn, x, targets, layer)
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activations, axis=-1))


def gradcam_plus_plus(fn: ModelFunction, x, targets, *, layer: str | None = None) -> jax.Array:
    """Grad-CAM++: alpha_k = sum_ij ReLU(G_kij) a_kij with a = G^2 / (2 G^2 + sum_ij A_k
    G^3) (0 where G is 0), pytorch-grad-cam's closed form for an exponential output."""
    layer = layer or default_layer(fn, x)
    run = fn.jit(lambda fn, x, t: _gradcam_pp(fn, x, t, layer))
    return run(x, jnp.asarray(targets))


def _gradcam_pp(fn, x, targets, layer):
    activations, grads = _activations_and_grads(fn, x, targets, layer)
    g2, g3 = grads**2, grads**3
    summed = jnp.sum(activations, axis=(1, 2), keepdims=True)
    aij = g2 / (2 * g2 + summed * g3 + 1e-6)  # pytorch-grad-cam's eps
    aij = jnp.where(grads != 0, aij, 0)
    weights = jnp.sum(jax.nn.relu(grads) * aij, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activations, axis=-1))


def attention_rollout(
    fn: ModelFunction, x, targets=None, *, head_fusion: str = "mean", residual: float = 0.5
) -> jax.Array:
    """How much each patch flows into the output token through every attention layer:
    R = prod_l ((1 - residual) A_l + residual I), rows renormalised, A_l the layer's weights
    fused over heads ("mean" or "max"); the class token's row (the mean row without one) on
    the patch grid [B, g, g]. Class-agnostic: `targets` is ignored."""
    if head_fusion not in ("mean", "max"):
        raise UserError(f"head_fusion {head_fusion!r}: use 'mean' or 'max'")

    def run(fn, x):
        _, seen = fn.tapped(x, {}, attention=True)
        layers = [v for k, v in seen.items() if k.startswith("attention/")]
        if not layers:
            raise UserError("attention rollout needs a model with attention layers (a ViT)")
        tokens = layers[0].shape[-1]
        rollout = jnp.broadcast_to(jnp.eye(tokens), (x.shape[0], tokens, tokens))
        for weights in layers:
            fused = weights.mean(axis=1) if head_fusion == "mean" else weights.max(axis=1)
            a = (1 - residual) * fused + residual * jnp.eye(tokens)
            a = a / jnp.sum(a, axis=-1, keepdims=True)
            rollout = a @ rollout
        side = int(np.sqrt(tokens))
        prefix = tokens - side * side
        row = rollout[:, 0] if prefix else rollout.mean(axis=1)
        return row[:, prefix:].reshape(x.shape[0], side, side)

    return fn.jit(run)(x)
