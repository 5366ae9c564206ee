"""GoogLeNet (Inception v1) in torchvision's geometry.

Submodules are named after torchvision's (`conv1/{conv,bn}`, `inception3a/branch2_1/conv`,
`aux1/fc1`, `fc`; a torch `nn.Sequential` index joins its parent with `_`), so a torch state
dict maps one to one, and parameter counts equal torchvision's (6,624,904 without aux heads,
1,000 classes). As in torchvision: max pools use ceil_mode, BatchNorm eps is 0.001, and the
"5x5" branch uses a 3x3 conv (torchvision issue #906).
"""

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import tap, torch_batch_norm
from jaxvision.models.pooling import adaptive_avg_pool, max_pool
from jaxvision.models.resnet import torch_linear_bias_init

ModuleDef = Any

# torchvision: trunc_normal_(std=0.01, a=-2, b=2) for conv and linear weights; the bounds are
# 200 standard deviations away, so this is a plain normal.
kernel_init = nn.initializers.normal(0.01)


def transform_input(x: jnp.ndarray) -> jnp.ndarray:
    """torchvision's `transform_input`: ImageNet-normalised RGB → the (x - 0.5) / 0.5 scaling
    Google's weights were trained on. x: [B, H, W, 3] → [B, H, W, 3]."""
    mean = jnp.array([0.485, 0.456, 0.406], x.dtype)
    std = jnp.array([0.229, 0.224, 0.225], x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class BasicConv2d(nn.Module):
    """Bias-free conv → BatchNorm(eps=0.001) → ReLU. x: [B, H, W, C] → [B, H', W', features]."""

    features: int
    kernel_size: tuple[int, int]
    conv: ModuleDef
    norm: ModuleDef
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        (ph, pw), s = self.padding, self.strides
        pads = ((ph, ph), (pw, pw))
        x = self.conv(self.features, self.kernel_size, (s, s), padding=pads, name="conv")(x)
        return nn.relu(self.norm(name="bn")(x))


class Inception(nn.Module):
    """Four parallel branches concatenated: [B, H, W, C] →
    [B, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj]."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        block = functools.partial(BasicConv2d, conv=self.conv, norm=self.norm)
        b1 = block(self.ch1x1, (1, 1), name="branch1")(x)
        b2 = block(self.ch3x3red, (1, 1), name="branch2_0")(x)
        b2 = block(self.ch3x3, (3, 3), padding=(1, 1), name="branch2_1")(b2)
        b3 = block(self.ch5x5red, (1, 1), name="branch3_0")(x)
        b3 = block(self.ch5x5, (3, 3), padding=(1, 1), name="branch3_1")(b3)
        b4 = max_pool(x, 3, 1, padding=1, ceil_mode=True)
        b4 = block(self.pool_proj, (1, 1), name="branch4_1")(b4)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary head: adaptive avg pool 4x4 → 1x1 conv (128) → fc1 (1024) → dropout → fc2.

    x: [B, 14, 14, C] (any H, W) → logits [B, num_classes] float32.
    """

    num_classes: int
    dropout_rate: float
    conv: ModuleDef
    norm: ModuleDef
    dense: ModuleDef
    train: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = adaptive_avg_pool(x, (4, 4))
        x = BasicConv2d(128, (1, 1), self.conv, self.norm, name="conv")(x)
        # Flatten in torch's (C, H, W) order so fc1's weight is torch's, transposed.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.relu(self.dense(1024, bias_init=torch_linear_bias_init(2048), name="fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not self.train)(x)
        x = self.dense(self.num_classes, bias_init=torch_linear_bias_init(1024), name="fc2")(x)
        return x.astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet. Collections: `params` and `batch_stats` (float32).

    `aux_logits` adds torchvision's two auxiliary heads (`aux1` after inception4a, `aux2` after
    inception4d); they are created at init and run only when `train`. `transform_input` is off,
    as in torchvision for random init; turn it on for torchvision's pretrained ImageNet weights
    (torchvision does so when loading them).
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "fc"
    # Weight of each auxiliary head's loss beside the main one, with `aux_logits` (the paper's).
    aux_loss_weight: ClassVar[float] = 0.3

    num_classes: int
    aux_logits: bool = False
    transform_input: bool = False
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: the last
        inception block of each resolution, "inception3b" [B, h, w, 480], "inception4e"
        [..., 832] and "inception5b" [..., 1024] (224 input: 28x28, 14x14, 7x7); the last is
        the map the classifier pools."""
        return ("inception3b", "inception4e", "inception5b")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, 3] float → logits: [B, num_classes] float32.

        With `aux_logits` and `train`: the tuple (logits, aux2 logits, aux1 logits), torch's
        GoogLeNetOutputs order. With `features`: {"pre_logits": [B, 1024] float32,
        "inception3b", ...: see `feature_names`, in the compute dtype}.
        A 224 input gives 56x56 after the stem, 28 / 14 / 7 for the inception stages.
        """
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=kernel_init,
        )
        norm = torch_batch_norm(train, self.dtype, epsilon=1e-3)
        dense = functools.partial(
            nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=kernel_init
        )
        block = functools.partial(BasicConv2d, conv=conv, norm=norm)
        inception = functools.partial(Inception, conv=conv, norm=norm)
        # Aux heads run in training only, but must exist at init so their params are created.
        with_aux = self.aux_logits and (train or self.is_initializing())
        aux = functools.partial(
            InceptionAux,
            self.num_classes,
            self.aux_dropout_rate,
            conv,
            norm,
            dense,
            train,
        )

        stages = {}  # the feature maps `feature_names` lists
        if self.transform_input:
            x = transform_input(x)
        x = block(64, (7, 7), strides=2, padding=(3, 3), name="conv1")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = block(64, (1, 1), name="conv2")(x)
        x = block(192, (3, 3), padding=(1, 1), name="conv3")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)

        x = inception(64, 96, 128, 16, 32, 32, name="inception3a")(x)
        x = inception(128, 128, 192, 32, 96, 64, name="inception3b")(x)
        stages["inception3b"] = x = tap("inception3b", x)
        x = max_pool(x, 3, 2, ceil_mode=True)

        x = inception(192, 96, 208, 16, 48, 64, name="inception4a")(x)
        aux1 = aux(name="aux1")(x) if with_aux else None
        x = inception(160, 112, 224, 24, 64, 64, name="inception4b")(x)
        x = inception(128, 128, 256, 24, 64, 64, name="inception4c")(x)
        x = inception(112, 144, 288, 32, 64, 64, name="inception4d")(x)
        aux2 = aux(name="aux2")(x) if with_aux else None
        x = inception(256, 160, 320, 32, 128, 128, name="inception4e")(x)
        stages["inception4e"] = x = tap("inception4e", x)
        x = max_pool(x, 2, 2, ceil_mode=True)

        x = inception(256, 160, 320, 32, 128, 128, name="inception5a")(x)
        x = inception(384, 192, 384, 48, 128, 128, name="inception5b")(x)
        stages["inception5b"] = x = tap("inception5b", x)

        x = jnp.mean(x, axis=(1, 2))  # [B, 1024]
        head = dense(self.num_classes, bias_init=torch_linear_bias_init(1024), name="fc")
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), **stages}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = head(x).astype(jnp.float32)
        if self.aux_logits and train:
            return logits, aux2, aux1
        return logits
