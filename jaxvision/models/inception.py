"""Inception v3 in torchvision's geometry (299x299 inputs; 75x75 at least).

Submodules carry torchvision's names (`Conv2d_1a_3x3/{conv,bn}`, `Mixed_6b/branch7x7_2/conv`,
`AuxLogits/conv1`, `fc`), so a torch state dict maps one to one, and parameter counts equal
torchvision's (23,834,568 without the aux head, 27,161,264 with it; 1,000 classes).
"""

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.googlenet import BasicConv2d, transform_input
from jaxvision.models.layers import tap, torch_batch_norm
from jaxvision.models.pooling import avg_pool
from jaxvision.models.resnet import torch_linear_bias_init

ModuleDef = Any


def _normal(stddev: float):
    # torchvision: trunc_normal_(std, a=-2, b=2); the bounds are >= 20 std away: a plain normal.
    return nn.initializers.normal(stddev)


def _max_pool(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (3, 3), strides=(2, 2))  # torch's floor mode, no padding


def branch_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """The branch_pool's pooling in torchvision's blocks: 3x3 average, stride 1, zero padding
    1 counted in the average. (The FID Inception swaps it, see jaxvision.models.fid_inception.)"""
    return avg_pool(x, 3, 1, 1)


class InceptionA(nn.Module):
    """35x35 block: [B, H, W, C] → [B, H, W, 224 + pool_features]."""

    pool_features: int
    block: ModuleDef
    # The branch_pool's pooling (the FID Inception's blocks swap it).
    pool: Callable[[jnp.ndarray], jnp.ndarray] = branch_avg_pool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block = self.block
        b1 = block(64, (1, 1), name="branch1x1")(x)
        b5 = block(48, (1, 1), name="branch5x5_1")(x)
        b5 = block(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = block(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = block(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = block(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = block(self.pool_features, (1, 1), name="branch_pool")(self.pool(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35 → 17: [B, H, W, C] → [B, (H-3)//2+1, (W-3)//2+1, 480 + C]."""

    block: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block = self.block
        b3 = block(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = block(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = block(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = block(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs: [B, H, W, C] → [B, H, W, 768]."""

    channels_7x7: int
    block: ModuleDef
    # The branch_pool's pooling (the FID Inception's blocks swap it).
    pool: Callable[[jnp.ndarray], jnp.ndarray] = branch_avg_pool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block, c7 = self.block, self.channels_7x7
        b1 = block(192, (1, 1), name="branch1x1")(x)
        b7 = block(c7, (1, 1), name="branch7x7_1")(x)
        b7 = block(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = block(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = block(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = block(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = block(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = block(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = block(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = block(192, (1, 1), name="branch_pool")(self.pool(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17 → 8: [B, H, W, C] → [B, (H-3)//2+1, (W-3)//2+1, 512 + C]."""

    block: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block = self.block
        b3 = block(192, (1, 1), name="branch3x3_1")(x)
        b3 = block(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = block(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = block(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = block(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = block(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 convs: [B, H, W, C] → [B, H, W, 2048]."""

    block: ModuleDef
    # The branch_pool's pooling (the FID Inception's blocks swap it).
    pool: Callable[[jnp.ndarray], jnp.ndarray] = branch_avg_pool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block = self.block
        b1 = block(320, (1, 1), name="branch1x1")(x)
        b3 = block(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                block(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                block(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = block(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = block(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                block(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                block(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        bp = block(192, (1, 1), name="branch_pool")(self.pool(x))
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """Aux head on the 17x17 grid: avg pool 5/3 → 1x1 conv (128) → 5x5 conv (768) → global
    mean → fc. x: [B, 17, 17, 768] → logits [B, num_classes] float32."""

    num_classes: int
    block: ModuleDef
    dense: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = avg_pool(x, 5, 3)
        x = self.block(128, (1, 1), name="conv0")(x)
        x = self.block(768, (5, 5), kernel_init=_normal(0.01), name="conv1")(x)
        x = jnp.mean(x, axis=(1, 2))
        init = dict(kernel_init=_normal(0.001), bias_init=torch_linear_bias_init(768))
        return self.dense(self.num_classes, **init, name="fc")(x).astype(jnp.float32)


class InceptionV3(nn.Module):
    """Inception v3. Collections: `params` and `batch_stats` (float32; BN eps 0.001).

    `aux_logits` adds torchvision's `AuxLogits` head after Mixed_6e; it is created at init and
    runs only when `train`. `transform_input` is off, as in torchvision for random init; turn
    it on for torchvision's pretrained ImageNet weights.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "fc"
    # Weight of the auxiliary head's loss beside the main one, with `aux_logits` (TF-slim's).
    aux_loss_weight: ClassVar[float] = 0.4

    num_classes: int
    aux_logits: bool = False
    transform_input: bool = False
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: the last
        block of each grid, "Mixed_5d" [B, h, w, 288], "Mixed_6e" [..., 768] and "Mixed_7c"
        [..., 2048] (299 input: 35x35, 17x17, 8x8); the last is the map the classifier pools."""
        return ("Mixed_5d", "Mixed_6e", "Mixed_7c")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float → logits: [B, num_classes] float32.

        With `aux_logits` and `train`: the tuple (logits, aux logits), torch's InceptionOutputs
        order. With `features`: {"pre_logits": [B, 2048] float32, "Mixed_5d", ...: see
        `feature_names`, in the compute dtype}. A 299 input gives 35x35
        at Mixed_5b, 17x17 at Mixed_6a..6e and 8x8 at Mixed_7a..7c.
        """
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=_normal(0.1),
        )
        norm = torch_batch_norm(train, self.dtype, epsilon=1e-3)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_normal(0.1)
        )

        def block(features, kernel_size, kernel_init=None, **kwargs):
            c = conv if kernel_init is None else functools.partial(conv, kernel_init=kernel_init)
            return BasicConv2d(features, kernel_size, c, norm, **kwargs)

        stages = {}  # the feature maps `feature_names` lists
        if self.transform_input:
            x = transform_input(x)
        x = block(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = block(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = block(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x)
        x = block(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = block(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        x = InceptionA(32, block, name="Mixed_5b")(x)
        x = InceptionA(64, block, name="Mixed_5c")(x)
        x = InceptionA(64, block, name="Mixed_5d")(x)
        stages["Mixed_5d"] = x = tap("Mixed_5d", x)
        x = InceptionB(block, name="Mixed_6a")(x)
        x = InceptionC(128, block, name="Mixed_6b")(x)
        x = InceptionC(160, block, name="Mixed_6c")(x)
        x = InceptionC(160, block, name="Mixed_6d")(x)
        x = InceptionC(192, block, name="Mixed_6e")(x)
        stages["Mixed_6e"] = x = tap("Mixed_6e", x)
        # The aux head runs in training only, but must exist at init to create its params.
        aux = None
        if self.aux_logits and (train or self.is_initializing()):
            aux = InceptionAux(self.num_classes, block, dense, name="AuxLogits")(x)
        x = InceptionD(block, name="Mixed_7a")(x)
        x = InceptionE(block, name="Mixed_7b")(x)
        x = InceptionE(block, name="Mixed_7c")(x)
        stages["Mixed_7c"] = x = tap("Mixed_7c", x)

        x = jnp.mean(x, axis=(1, 2))  # [B, 2048]
        head = dense(self.num_classes, bias_init=torch_linear_bias_init(2048), name="fc")
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), **stages}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = head(x).astype(jnp.float32)
        if self.aux_logits and train:
            return logits, aux
        return logits
