"""DenseNet-BC (121, 169) in torchvision's geometry.

Submodules are named after torchvision's, without its `features.` prefix: `conv0`, `norm0`,
`denseblock1/denselayer1/{norm1,conv1,norm2,conv2}`, `transition1/{norm,conv}`, `norm5`,
`classifier`. Parameter counts equal torchvision's (densenet121: 7,978,856 with 1,000 classes).
"""

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.models.layers import tap, torch_batch_norm
from jaxvision.models.resnet import torch_linear_kernel_init

ModuleDef = Any

# torchvision: kaiming_normal_ with its defaults (fan_in, gain sqrt(2)); zero linear bias.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) → BN-ReLU-3x3 conv (growth).

    x: [B, H, W, C] → new features [B, H, W, growth_rate] (the block concatenates them).
    """

    growth_rate: int
    bn_size: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef
    train: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = nn.relu(self.norm(name="norm1")(x))
        y = self.conv(self.bn_size * self.growth_rate, (1, 1), padding="VALID", name="conv1")(y)
        y = nn.relu(self.norm(name="norm2")(y))
        y = self.conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
        return nn.Dropout(self.drop_rate, deterministic=not self.train)(y)


class DenseBlock(nn.Module):
    """`num_layers` DenseLayers, each seeing all earlier outputs: [B, H, W, C] →
    [B, H, W, C + num_layers * growth_rate]."""

    num_layers: int
    growth_rate: int
    bn_size: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef
    train: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i in range(self.num_layers):
            new = DenseLayer(
                self.growth_rate,
                self.bn_size,
                self.drop_rate,
                self.conv,
                self.norm,
                self.train,
                name=f"denselayer{i + 1}",
            )(x)
            x = jnp.concatenate([x, new], axis=-1)
        return x


class Transition(nn.Module):
    """BN-ReLU-1x1 conv halving the channels, then 2x2/2 average pooling."""

    features: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(self.norm(name="norm")(x))
        x = self.conv(self.features, (1, 1), padding="VALID", name="conv")(x)
        return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
    """DenseNet-BC. Use the presets or set `growth_rate`/`block_config`/`num_init_features`.

    Collections: `params` and `batch_stats` (float32). Stem: 7x7/2 conv and 3x3/2 max pool, so
    a 224 input gives 56x56 entering block 1 and 7x7 after the last block. `drop_rate` is
    torch's dropout after every dense layer (rng `dropout`, only when `train`).
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "classifier"

    num_classes: int
    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    drop_rate: float = 0.0
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: each dense
        block's output, "block1".."block4" [B, h, w, c], strides 4, 8, 16, 32 (densenet121 at
        224: 56x56x256, 28x28x512, 14x14x1024, 7x7x1024). Blocks before the last are taken
        before their transition halves them; the last is after norm5 + ReLU, the map the
        classifier pools."""
        return tuple(f"block{i + 1}" for i in range(len(self.block_config)))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float → logits: [B, num_classes] float32, or with `features`
        {"pre_logits": [B, D] float32 (D = 1024 for densenet121, 1664 for densenet169),
        "block1"..: see `feature_names`, in the compute dtype}."""
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=conv_kernel_init,
        )
        norm = torch_batch_norm(train, self.dtype)
        x = conv(self.num_init_features, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="conv0")(x)
        x = nn.relu(norm(name="norm0")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        channels = self.num_init_features
        blocks = {}
        for i, num_layers in enumerate(self.block_config):
            x = DenseBlock(
                num_layers,
                self.growth_rate,
                self.bn_size,
                self.drop_rate,
                conv,
                norm,
                train,
                name=f"denseblock{i + 1}",
            )(x)
            channels += num_layers * self.growth_rate
            if i != len(self.block_config) - 1:
                blocks[f"block{i + 1}"] = x = tap(f"block{i + 1}", x)
                channels //= 2
                x = Transition(channels, conv, norm, name=f"transition{i + 1}")(x)

        x = nn.relu(norm(name="norm5")(x))
        name = f"block{len(self.block_config)}"
        blocks[name] = x = tap(name, x)
        x = jnp.mean(x, axis=(1, 2))
        head = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=torch_linear_kernel_init,
            bias_init=nn.initializers.zeros,
            name="classifier",
        )
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), **blocks}
        return head(x).astype(jnp.float32)


DenseNet121 = functools.partial(
    DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64
)
DenseNet169 = functools.partial(
    DenseNet, growth_rate=32, block_config=(6, 12, 32, 32), num_init_features=64
)
