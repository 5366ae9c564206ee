"""torchvision's FeaturePyramidNetwork, with its LastLevelP6P7 extra block as an option.

Submodules are named after torch's: `inner_blocks_i` (torch `inner_blocks.i.0`, the 1x1
lateral), `layer_blocks_i` (`layer_blocks.i.0`, the 3x3 output conv), `p6`, `p7`
(`extra_blocks.p6/p7`). All convs have biases and torch's FPN init: kaiming-uniform (a=1),
bias 0.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.models.detection.layers import kaiming_uniform_a1
from jaxvision.models.resnet import PAD1

P6_INPUTS = ("p5", "c5")


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """The source row of each output row in torch's `F.interpolate(mode="nearest", size=...)`:
    floor(i * in / out) with torch's float32 arithmetic, and its exact special cases."""
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(source, in_size - 1)


def resize_nearest(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """x: [B, h, w, C] → [B, *size, C], torch's nearest upsampling (also for non-2x ratios, as
    a 13-row C4 over a 7-row C5 gives)."""
    rows = _nearest_indices(x.shape[1], size[0])
    cols = _nearest_indices(x.shape[2], size[1])
    return jnp.take(jnp.take(x, rows, axis=1), cols, axis=2)


class FeaturePyramidNetwork(nn.Module):
    """Top-down FPN over maps given shallow to deep, plus `extra_levels` stride-2 3x3 convs.

    features: [C_i maps [B, h_i, w_i, c_i]] → [P_i maps [B, h_i, w_i, channels]] + extras, in
    the compute dtype. Each lateral is inner(C_i) + the deeper merged map resized (nearest) to
    its size; each output is layer(merged). Extras (torchvision's LastLevelP6P7):
    P6 = p6(P5 or C5, per `p6_input`), P7 = p7(relu(P6)); a side of n gives ceil(n / 2).
    torchvision's RetinaNet v1 builds LastLevelP6P7(256, 256), so its P6 reads P5 ("p5");
    v2's LastLevelP6P7(2048, 256) reads C5 ("c5").
    """

    channels: int = 256
    extra_levels: int = 0  # 0, 1 (P6) or 2 (P6 and P7)
    p6_input: str = "p5"
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.p6_input not in P6_INPUTS:
            raise UserError(f"unknown p6_input {self.p6_input!r}: choose one of p5, c5")
        if self.extra_levels not in (0, 1, 2):
            raise UserError(f"FPN extra_levels is 0, 1 or 2 (P6, P7), got {self.extra_levels}")
        super().__post_init__()

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
        conv = functools.partial(
            nn.Conv,
            self.channels,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=kaiming_uniform_a1,
            bias_init=nn.initializers.zeros,
        )
        n = len(features)
        inner = [conv((1, 1), name=f"inner_blocks_{i}") for i in range(n)]
        layer = [conv((3, 3), padding=PAD1, name=f"layer_blocks_{i}") for i in range(n)]
        merged = inner[-1](features[-1])
        results = [layer[-1](merged)]
        for i in range(n - 2, -1, -1):
            lateral = inner[i](features[i])
            merged = lateral + resize_nearest(merged, lateral.shape[1:3])
            results.insert(0, layer[i](merged))
        if self.extra_levels:
            source = results[-1] if self.p6_input == "p5" else features[-1]
            p6 = conv((3, 3), strides=(2, 2), padding=PAD1, name="p6")(source)
            results.append(p6)
            if self.extra_levels == 2:
                results.append(conv((3, 3), strides=(2, 2), padding=PAD1, name="p7")(nn.relu(p6)))
        return results
