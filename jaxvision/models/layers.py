"""Small layers shared by several model families."""

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
