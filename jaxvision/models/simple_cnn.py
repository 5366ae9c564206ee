"""A two-conv CNN: the smallest model that learns MNIST-sized data; a seed for experiments."""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp


class SimpleCNN(nn.Module):
    """conv(32) → pool → conv(64) → pool → dense(256) → dropout → dense(num_classes).

    Convolutions use 'SAME' padding, so any input of 4x4 or more works (8x8, 28x28, 32x32...);
    the first dense layer's size follows from the input size. Only a `params` collection;
    dropout draws from the `dropout` rng when `train` and `dropout_rate > 0`.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "fc2"

    num_classes: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters are always float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float (normalised) → logits: [B, num_classes] float32, or with
        `features` {"pre_logits": [B, 256] float32} (the hidden layer, before dropout)."""
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32)
        x = nn.Conv(32, (3, 3), padding="SAME", name="conv1", **dense)(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = nn.Conv(64, (3, 3), padding="SAME", name="conv2", **dense)(x)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(256, name="fc1", **dense)(x))
        if features:
            return {"pre_logits": x.astype(jnp.float32)}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, name="fc2", **dense)(x)
        return x.astype(jnp.float32)
