"""VGG-16/19, with or without BatchNorm, in torchvision's geometry.

Submodules are named after torchvision's `nn.Sequential` indices (`features_0`, `features_1`,
..., `classifier_0`, `classifier_3`, `classifier_6`), so a torch state dict maps one to one,
and parameter counts equal torchvision's (vgg16: 138,357,544 with 1,000 classes).
"""

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.layers import tap
from jaxvision.models.pooling import adaptive_avg_pool

# torchvision's configurations: channel counts of the 3x3 convs, "M" a 2x2/2 max pool.
CFGS = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M")
    + (512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
    + (512, 512, 512, 512, "M"),
}

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs, N(0, 0.01) for
# linear layers, zero biases.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
linear_kernel_init = nn.initializers.normal(0.01)


class VGG(nn.Module):
    """Convs from `cfg` → adaptive avg pool to `pool_size` → 3 linear layers (2 x `hidden`).

    Collections: `params`, plus `batch_stats` when `batch_norm`. Any input of 32x32 or more
    works: the adaptive pool (torch's exact windows) gives `pool_size` whatever the feature map.
    Dropout (`dropout_rate`, torch's default 0.5) draws from the `dropout` rng when `train`.
    """

    # The top-level module that maps features to classes (a new head when fine-tuning).
    classifier: ClassVar[str] = "classifier_6"

    cfg: Sequence[int | str]
    num_classes: int
    batch_norm: bool = False
    hidden: int = 4096
    pool_size: int = 7
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32  # compute dtype; parameters and BN statistics stay float32

    def __post_init__(self):
        bad = [v for v in self.cfg if v != "M" and not isinstance(v, int)]
        if bad:
            raise UserError(f"VGG cfg entries are channel counts or 'M', got {bad[0]!r}")
        super().__post_init__()

    def feature_names(self) -> tuple[str, ...]:
        """The maps `features=True` returns besides "pre_logits", shallow to deep: the output
        of each max pool, "pool1".."pool5" [B, H/2**i, W/2**i, c] (vgg16 at 224: 112x112x64,
        56x56x128, 28x28x256, 14x14x512, 7x7x512); the last is what the classifier reads."""
        return tuple(f"pool{i + 1}" for i in range(self.cfg.count("M")))

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        """images: [B, H, W, C] float → logits: [B, num_classes] float32, or with `features`
        {"pre_logits": [B, hidden] float32 (the input of the last linear layer), "pool1"..: see
        `feature_names`, in the compute dtype}."""
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=linear_kernel_init,
            bias_init=nn.initializers.zeros,
        )
        index = 0  # position in torch's `features` nn.Sequential, which names the modules
        pools = {}
        for v in self.cfg:
            if v == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                name = f"pool{len(pools) + 1}"
                pools[name] = x = tap(name, x)
                index += 1
                continue
            x = nn.Conv(
                v,
                (3, 3),
                padding=((1, 1), (1, 1)),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=conv_kernel_init,
                name=f"features_{index}",
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                    use_fast_variance=False,
                    name=f"features_{index + 1}",
                )(x)
            x = nn.relu(x)
            index += 3 if self.batch_norm else 2

        x = adaptive_avg_pool(x, (self.pool_size, self.pool_size))
        # Flatten in torch's (C, H, W) order so classifier_0's weight is torch's, transposed.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = nn.relu(dense(self.hidden, name="classifier_0")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.relu(dense(self.hidden, name="classifier_3")(x))
        head = dense(self.num_classes, name="classifier_6")
        if features:
            head(x)  # unused, but init in this mode must create the same parameters
            return {"pre_logits": x.astype(jnp.float32), **pools}
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return head(x).astype(jnp.float32)


VGG16 = functools.partial(VGG, cfg=CFGS["vgg16"])
VGG19 = functools.partial(VGG, cfg=CFGS["vgg19"])
VGG16BN = functools.partial(VGG, cfg=CFGS["vgg16"], batch_norm=True)
VGG19BN = functools.partial(VGG, cfg=CFGS["vgg19"], batch_norm=True)
