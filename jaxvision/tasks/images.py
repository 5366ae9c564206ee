"""What image tasks share, for training and inference alike: the device-side normalisation and
a model's init from an example batch. Nothing here imports the training code."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """images: [B, H, W, C] uint8 (0..255) -> float32, per channel (x - mean) / std.

    Done on the device so the host sends 1 byte per pixel instead of 4.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) - mean) / std


def image_model_init(model: nn.Module, images) -> Callable[[jax.Array], dict]:
    """`rng -> variables` of an image model on `images` ([B, H, W, C] arrays or shapes; only
    their shape matters)."""
    dummy = jnp.zeros((1, *images.shape[1:]), jnp.float32)
    return lambda rng: model.init({"params": rng, "dropout": rng}, dummy, train=False)
