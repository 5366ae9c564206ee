"""A two-conv CNN: the smallest model that learns MNIST-sized data; a seed for experiments."""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import tap


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

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: each conv's
        output after ReLU and its 2x2 pool, "conv1" [B, H/2, W/2, 32] and "conv2"
        [B, H/4, W/4, 64] (28x28 input: 14x14x32, 7x7x64)."""
        return ("conv1", "conv2")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float (normalised) → logits: [B, num_classes] float32, or with
        `features` {"pre_logits": [B, 256] float32 (the hidden layer, before dropout), "conv1",
        "conv2": see `feature_names`, in the compute dtype}."""
        dense = dict(dtype=self.dtype, param_dtype=jnp.float32)
        x = nn.Conv(32, (3, 3), padding="SAME", name="conv1", **dense)(x)
        conv1 = x = tap("conv1", nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2)))
        x = nn.Conv(64, (3, 3), padding="SAME", name="conv2", **dense)(x)
        conv2 = x = tap("conv2", nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(256, name="fc1", **dense)(x))
        head = nn.Dense(self.num_classes, name="fc2", **dense)
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), "conv1": conv1, "conv2": conv2}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return head(x).astype(jnp.float32)
