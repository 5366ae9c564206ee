"""Pieces the detection networks share: frozen BatchNorm, the norm choice, torch's inits, and
the head-output layout.

FrozenBatchNorm keeps all four tensors (weight, bias, running mean and variance) in the
`batch_stats` collection, none in `params`: parameter counts then equal torchvision's (whose
FrozenBatchNorm2d holds them as buffers), the optimizer never sees them, and they travel
wherever BatchNorm statistics already travel (train state, checkpoints, ensembles). A training
forward with `mutable=["batch_stats"]` returns them unchanged.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.layers import torch_batch_norm

NORMS = ("frozen", "batch")
FROZEN_COLLECTION = "batch_stats"

# torch.nn.init.kaiming_uniform_(a=1) (FPN convs): gain 1, bound sqrt(3 / fan_in).
kaiming_uniform_a1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
# torch.nn.init.xavier_uniform_ (SSD extras and heads): bound sqrt(6 / (fan_in + fan_out)).
xavier_uniform = nn.initializers.xavier_uniform()


class FrozenBatchNorm(nn.Module):
    """torchvision's FrozenBatchNorm2d: x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps))
    with fixed w, b, mean, var. x: [..., C] → [..., C] in `dtype`.

    Variables (float32, collection `batch_stats`): scale (torch `weight`), bias, mean
    (`running_mean`), var (`running_var`). `scale_init` is a constant init (ones, or zeros for a
    zero-initialised residual), accepted so the ResNet blocks can build it like BatchNorm.
    """

    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (x.shape[-1],)

        def stat(name, init):
            return self.variable(
                FROZEN_COLLECTION, name, lambda: init(jax.random.key(0), shape, jnp.float32)
            ).value

        scale = stat("scale", self.scale_init) * jax.lax.rsqrt(
            stat("var", nn.initializers.ones) + self.epsilon
        )
        shift = stat("bias", nn.initializers.zeros) - stat("mean", nn.initializers.zeros) * scale
        return x * scale.astype(self.dtype) + shift.astype(self.dtype)


def norm_factory(norm: str, train: bool, dtype: Any, epsilon: float):
    """A BatchNorm module factory for the ResNet blocks: "frozen" (FrozenBatchNorm) or "batch"
    (trainable, torch's BatchNorm2d semantics: batch statistics when `train`)."""
    check_norm(norm)
    if norm == "frozen":
        return functools.partial(FrozenBatchNorm, epsilon=epsilon, dtype=dtype)
    return torch_batch_norm(train, dtype, epsilon)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}: choose one of {', '.join(NORMS)}")


def anchors_last(y: jnp.ndarray, columns: int) -> jnp.ndarray:
    """A head conv's output [B, H, W, A * columns] → [B, H * W * A, columns] float32.

    torchvision views (N, A * columns, H, W) as (N, A, columns, H, W) and permutes to
    (N, H, W, A, columns): channel a * columns + c is anchor a's column c, rows go position by
    position (y-major), and the anchors of one position are consecutive. NHWC already has the
    channels last, so a reshape gives the same layout.
    """
    b, h, w, c = y.shape
    return y.reshape(b, h * w * (c // columns), columns).astype(jnp.float32)
