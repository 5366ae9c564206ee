"""The FID Inception-v3: the network whose pool3 features define published FID / KID numbers.

pytorch-fid's `InceptionV3` (the TF-slim 2015-12-05 graph ported to torch) in torchvision's
layer names, with its differences from torchvision's Inception-v3 (jaxvision.models.inception,
whose blocks it reuses):
- Mixed_5b..5d, 6b..6e and 7b average their branch_pool without the zero padding
  (count_include_pad=False, TF's pooling); Mixed_7c max-pools it (3x3, stride 1, padding 1);
- the input is resized to 299x299 bilinearly (align_corners=False, no antialiasing, torch's
  `F.interpolate`) and mapped from [0, 1] to [-1, 1] (`resize_input`, `normalize_input`);
- the output is pool3, the global mean of Mixed_7c [B, 2048]; the 1,008-class head of the
  weight file is not used (nor created).

Weights: `load_fid_inception(path)` reads a safetensors of pytorch-fid's weights by their torch
names (jaxvision.weights.fid_inception); no download happens. With those weights, FIDs from
these features are comparable to published ones; with random weights only the geometry is.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.googlenet import BasicConv2d
from jaxvision.models.inception import (
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)
from jaxvision.models.layers import torch_batch_norm
from jaxvision.models.pooling import max_pool

INPUT_SIZE = 299
FEATURES = 2048
# pytorch-fid's InceptionV3() (pool3 output, no head), counted in torch: its parameter count.
TORCH_PARAMETERS = 21_785_568


def avg_pool_without_padding(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 average, stride 1, padding 1, averaging only the pixels inside the map (TF's)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
    """3x3 max, stride 1, padding 1 (padding never wins): Mixed_7c's branch_pool."""
    return max_pool(x, 3, 1, 1)


def resize_bilinear(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """[B, H, W, C] → [B, size, size, C] as torch's F.interpolate(mode="bilinear",
    align_corners=False): half-pixel centres, two taps per axis, no antialiasing."""
    shape = (x.shape[0], size, size, x.shape[3])
    return jax.image.resize(x, shape, method="bilinear", antialias=False)


class FIDInceptionV3(nn.Module):
    """images: [B, H, W, 3] float in [0, 1] → pool3 features [B, 2048] float32.

    H, W >= 75 without `resize_input`. Inference only: BatchNorm uses its running statistics
    (eps 0.001). Collections: `params`, `batch_stats`; 21,785,568 parameters, as pytorch-fid's.
    """

    resize_input: bool = True
    normalize_input: bool = True
    dtype: Any = jnp.float32  # compute dtype; parameters and statistics stay float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        norm = torch_batch_norm(False, self.dtype, epsilon=1e-3)

        def block(features, kernel_size, **kwargs):
            return BasicConv2d(features, kernel_size, conv, norm, **kwargs)

        x = x.astype(jnp.float32)
        if self.resize_input:
            x = resize_bilinear(x, INPUT_SIZE)
        if self.normalize_input:
            x = 2.0 * x - 1.0
        x = x.astype(self.dtype)
        x = block(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = block(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = block(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool(x, 3, 2)
        x = block(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = block(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = max_pool(x, 3, 2)
        tf_avg = avg_pool_without_padding
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, block, pool=tf_avg, name=name)(x)
        x = InceptionB(block, name="Mixed_6a")(x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(c7, block, pool=tf_avg, name=name)(x)
        x = InceptionD(block, name="Mixed_7a")(x)
        x = InceptionE(block, pool=tf_avg, name="Mixed_7b")(x)
        x = InceptionE(block, pool=max_pool_3x3, name="Mixed_7c")(x)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # pool3: [B, 2048]


def to_unit_range(images) -> jnp.ndarray:
    """Images as pytorch-fid reads image files: uint8 [B, H, W, C] → float32 /255, floats kept
    (taken to be in [0, 1]); one grey channel repeated to RGB, as PIL's convert("RGB")."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(
            f"FID Inception takes images [B, H, W, 1 or 3], got {tuple(images.shape)}: "
            "pass a batch of grey or RGB images"
        )
    if jnp.issubdtype(images.dtype, jnp.integer):
        images = images.astype(jnp.float32) / 255.0
    if images.shape[-1] == 1:
        images = jnp.repeat(images, 3, axis=-1)
    return images.astype(jnp.float32)


def fid_inception_features(variables: dict, images, model: FIDInceptionV3 | None = None):
    """images: [B, H, W, 1|3] uint8 (0..255) or float in [0, 1] → pool3 [B, 2048] float32.

    variables: from `jaxvision.weights.fid_inception.load_fid_inception` (or `model.init`).
    A generator's tanh output in [-1, 1] goes in as (x + 1) / 2. Jittable."""
    model = FIDInceptionV3() if model is None else model
    return model.apply(variables, to_unit_range(images))
