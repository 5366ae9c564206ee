"""DCGAN (Radford et al. 2016): a transposed-conv generator and a strided-conv discriminator.

Generator: z [B, latent_dim] -> 4x4 x (width * 2^(n-1)) by a 4x4 transposed conv, then n - 1
transposed convs (4x4, stride 2) that double the size and halve the width, BatchNorm + ReLU
after each, and a last one to `channels` with tanh: images in [-1, 1]. Discriminator: the
mirror, strided 4x4 convs with LeakyReLU(0.2) (BatchNorm after all but the first) down to 4x4,
then one logit. Convolutions have no bias, as in the PyTorch DCGAN reference, whose parameter
counts these equal (64x64 RGB, width 64: generator 3,576,704, discriminator 2,765,568).
Weights start as the paper's N(0, 0.02) (BatchNorm scales N(1, 0.02)).

Class-conditional variants (`num_classes` > 0): the generator reads the one-hot class beside z
and its BatchNorms are conditional (per-class scale and shift, de Vries et al. 2017 / BigGAN);
the discriminator adds the projection term <embed(y), h> to its logit (Miyato & Koyama 2018).
image_size is 4 * 2^k (32: three up-sampling stages).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_INIT = nn.initializers.normal(0.02)


def _scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def num_stages(image_size: int) -> int:
    """Up-sampling stages from 4x4 to `image_size` (32 -> 3); a clear error for other sizes."""
    stages = round(math.log2(image_size / 4)) if image_size >= 8 else 0
    if stages < 1 or 4 * 2**stages != image_size:
        raise ValueError(
            f"DCGAN image_size must be 4 * 2^k >= 8 (8, 16, 32, 64...), not {image_size}"
        )
    return stages


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are chosen by the class (plain BatchNorm without labels)."""

    num_classes: int = 0

    @nn.compact
    def __call__(self, x, labels, train: bool):
        conditional = self.num_classes > 0
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            use_scale=not conditional,
            use_bias=not conditional,
            scale_init=_scale_init,
            dtype=x.dtype,
        )(x)
        if not conditional:
            return x
        channels = x.shape[-1]
        scale = nn.Embed(self.num_classes, channels, embedding_init=_scale_init, name="scale")
        shift = nn.Embed(self.num_classes, channels, embedding_init=nn.initializers.zeros)
        gamma = scale(labels)[:, None, None, :].astype(x.dtype)
        beta = shift(labels)[:, None, None, :].astype(x.dtype)
        return x * gamma + beta


class Generator(nn.Module):
    """z: [B, latent_dim] float (+ labels [B] int when conditional) -> [B, S, S, channels]
    float32 in [-1, 1]."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 100
    width: int = 64  # channels of the last hidden stage; each earlier stage doubles it
    num_classes: int = 0  # > 0: conditional BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, labels=None, train: bool = False):
        stages = num_stages(self.image_size)
        # No biases: BatchNorm's shift follows every conv but the last, as in the reference.
        conv = dict(kernel_init=_INIT, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        if self.num_classes > 0:  # the class also enters with z (as in conditional DCGANs)
            z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
        x = z.astype(self.dtype)[:, None, None, :]
        x = nn.ConvTranspose(self.width * 2 ** (stages - 1), (4, 4), padding="VALID", **conv)(x)
        for i in range(stages):
            x = nn.relu(ConditionalBatchNorm(self.num_classes)(x, labels, train))
            out = self.channels if i == stages - 1 else self.width * 2 ** (stages - 2 - i)
            x = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME", **conv)(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """images: [B, S, S, C] float in [-1, 1] (+ labels [B] int when conditional) -> logits [B]
    float32 (real > 0)."""

    image_size: int = 32
    width: int = 64  # channels of the first stage; each later stage doubles it
    num_classes: int = 0  # > 0: projection discriminator
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, labels=None, train: bool = False):
        stages = num_stages(self.image_size)
        conv = dict(kernel_init=_INIT, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        x = x.astype(self.dtype)
        for i in range(stages):
            x = nn.Conv(
                self.width * 2**i, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), **conv
            )(x)
            if i > 0:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    scale_init=_scale_init,
                    dtype=self.dtype,
                )(x)
            x = nn.leaky_relu(x, 0.2)
        h = x.reshape(x.shape[0], -1).astype(jnp.float32)
        logits = nn.Dense(1, use_bias=False, kernel_init=_INIT, name="logit")(h)[:, 0]
        if self.num_classes > 0:
            embed = nn.Embed(self.num_classes, h.shape[-1], embedding_init=_INIT, name="project")
            logits = logits + jnp.sum(embed(labels) * h, axis=-1)
        return logits
