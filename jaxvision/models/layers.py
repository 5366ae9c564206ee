"""Small layers shared by several model families."""

import jax
import jax.numpy as jnp
from flax import linen as nn


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
