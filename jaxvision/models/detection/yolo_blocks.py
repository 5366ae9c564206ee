"""The building blocks of the Ultralytics YOLO networks (v8, 11, 26), NHWC, in Flax.

Each block is written from the published design, with submodules named as the reference's
state dict names them, so that a weight file maps by one rule (jaxvision.weights.ultralytics):
`cv1`, `cv2`, `cv3`, `m_0`, `attn`, `ffn_0`, and inside every `ConvNormAct` `conv` and `bn`.

- ConvNormAct: conv (no bias) → BatchNorm (eps 1e-3, momentum 0.03) → SiLU, "same" padding
  k // 2 on both sides (torch's), optional groups (depthwise: groups = channels).
- Bottleneck: two convs with a residual when asked and the widths agree.
- C2f (v8): one 1x1 conv split in two halves, n bottlenecks chained on the second half, all
  the intermediate maps concatenated and fused by a 1x1 conv.
- C3k2 (11, 26): C2f whose chained blocks are half-width bottlenecks, C3k blocks (a C3 of two
  3x3 bottlenecks) or, with `attn`, a bottleneck followed by a PSA block.
- SPPF: 1x1 conv, three chained 5x5 max pools, all four maps concatenated, 1x1 conv; YOLO26's
  variant leaves the first conv linear and adds the input back.
- PSABlock / C2PSA: multi-head self-attention over positions (with a depthwise 3x3 positional
  term on the values) and a 2-layer 1x1 feed-forward, both residual.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# torch's default Conv2d init (kaiming_uniform, a = sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.97  # flax's momentum keeps the old value: torch momentum 0.03


class ConvNormAct(nn.Module):
    """The reference's `Conv`: x [B, H, W, C] → [B, H / stride, W / stride, features].

    Variables: conv/kernel [k, k, C / groups, features]; bn/scale, bn/bias (params) and
    bn/mean, bn/var (batch_stats). `act=False` leaves the output linear."""

    features: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    act: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        pad = self.kernel // 2
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            strides=self.stride,
            padding=((pad, pad), (pad, pad)),  # explicit: 'SAME' would pad stride 2 unevenly
            feature_group_count=self.groups,
            use_bias=False,
            kernel_init=torch_conv_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            use_fast_variance=False,  # two-pass variance, as torch: no cancellation after SiLU
            name="bn",
        )(x)
        return nn.silu(x) if self.act else x


class Bottleneck(nn.Module):
    """Two convs (kernels `kernels`, hidden width int(features * expansion)) and a residual
    when `shortcut` and the input has `features` channels. [B, H, W, C] → [B, H, W, features]."""

    features: int
    shortcut: bool = True
    kernels: tuple[int, int] = (3, 3)
    expansion: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        hidden = int(self.features * self.expansion)
        y = ConvNormAct(hidden, self.kernels[0], dtype=self.dtype, name="cv1")(x, train)
        y = ConvNormAct(self.features, self.kernels[1], dtype=self.dtype, name="cv2")(y, train)
        return x + y if self.shortcut and x.shape[-1] == self.features else y


class C3k(nn.Module):
    """A C3 block of `depth` 3x3 bottlenecks (full width) on half the channels, beside a 1x1
    path: cv3(concat(m(cv1(x)), cv2(x))). [B, H, W, C] → [B, H, W, features]."""

    features: int
    depth: int = 2
    shortcut: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        hidden = int(self.features * 0.5)
        y = ConvNormAct(hidden, dtype=self.dtype, name="cv1")(x, train)
        for i in range(self.depth):
            y = Bottleneck(hidden, self.shortcut, (3, 3), 1.0, self.dtype, name=f"m_{i}")(y, train)
        side = ConvNormAct(hidden, dtype=self.dtype, name="cv2")(x, train)
        return ConvNormAct(self.features, dtype=self.dtype, name="cv3")(
            jnp.concatenate([y, side], axis=-1), train
        )


class CSPStage(nn.Module):
    """C2f (`kind` "c2f") or C3k2 ("c3k2", "c3k" or "attn" for its inner block): cv1 (1x1, 2c
    channels, c = int(features * expansion)) split in two; `depth` blocks chained on the second
    half; cv2 (1x1) over the concatenation of both halves and every block's output.
    [B, H, W, C] → [B, H, W, features].

    Inner blocks, the reference's choices: "c2f" full-width 3x3 bottlenecks (residual when
    `shortcut`), "c3k2" half-width ones (always residual), "c3k" C3k blocks, "attn" a
    half-width bottleneck then a PSABlock (named `m_i_0`, `m_i_1`: an nn.Sequential there).
    """

    features: int
    depth: int = 1
    kind: str = "c2f"
    shortcut: bool = False
    expansion: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = int(self.features * self.expansion)
        y = ConvNormAct(2 * c, dtype=self.dtype, name="cv1")(x, train)
        parts = [y[..., :c], y[..., c:]]
        for i in range(self.depth):
            h = parts[-1]
            if self.kind == "c2f":
                h = Bottleneck(c, self.shortcut, (3, 3), 1.0, self.dtype, name=f"m_{i}")(h, train)
            elif self.kind == "c3k2":
                h = Bottleneck(c, True, (3, 3), 0.5, self.dtype, name=f"m_{i}")(h, train)
            elif self.kind == "c3k":
                h = C3k(c, 2, True, self.dtype, name=f"m_{i}")(h, train)
            else:  # "attn"
                h = Bottleneck(c, True, (3, 3), 0.5, self.dtype, name=f"m_{i}_0")(h, train)
                h = PSABlock(max(c // 64, 1), self.dtype, name=f"m_{i}_1")(h, train)
            parts.append(h)
        return ConvNormAct(self.features, dtype=self.dtype, name="cv2")(
            jnp.concatenate(parts, axis=-1), train
        )


def max_pool_same(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Stride-1 max pool keeping H, W (padding counts as -inf, as torch's MaxPool2d)."""
    pad = size // 2
    return nn.max_pool(x, (size, size), strides=(1, 1), padding=((pad, pad), (pad, pad)))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: cv1 (1x1 to C / 2) → `pools` chained max pools of `size`
    → cv2 (1x1) over all of them. [B, H, W, C] → [B, H, W, features].

    YOLOv8 / 11: cv1 with SiLU, no residual. YOLO26 (`linear_first`, `residual`): cv1 linear,
    and the input added back when its width is `features`."""

    features: int
    size: int = 5
    pools: int = 3
    linear_first: bool = False
    residual: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = [
            ConvNormAct(x.shape[-1] // 2, act=not self.linear_first, dtype=self.dtype, name="cv1")(
                x, train
            )
        ]
        for _ in range(self.pools):
            y.append(max_pool_same(y[-1], self.size))
        out = ConvNormAct(self.features, dtype=self.dtype, name="cv2")(
            jnp.concatenate(y, axis=-1), train
        )
        return out + x if self.residual and x.shape[-1] == self.features else out


class Attention(nn.Module):
    """Multi-head self-attention over the H * W positions, 1x1 convs in and out.

    qkv (1x1, linear) gives per head [key_dim q, key_dim k, head_dim v] channels, head after
    head (key_dim = head_dim / 2); softmax(q k^T * key_dim^-0.5) v plus `pe` (a depthwise 3x3
    conv of v laid out as a map), then `proj` (1x1, linear). [B, H, W, C] → [B, H, W, C]."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        b, h, w, c = x.shape
        head_dim = c // self.heads
        key_dim = int(head_dim * 0.5)
        qkv = ConvNormAct(c + 2 * key_dim * self.heads, act=False, dtype=self.dtype, name="qkv")(
            x, train
        )
        qkv = qkv.reshape(b, h * w, self.heads, 2 * key_dim + head_dim)
        q, k, v = jnp.split(qkv, [key_dim, 2 * key_dim], axis=-1)  # [B, N, heads, d]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q * key_dim**-0.5, k)
        weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, h, w, c)
        v_map = v.reshape(b, h, w, c)  # channel = head * head_dim + d, as torch's view
        out = out + ConvNormAct(c, 3, groups=c, act=False, dtype=self.dtype, name="pe")(
            v_map, train
        )
        return ConvNormAct(c, act=False, dtype=self.dtype, name="proj")(out, train)


class PSABlock(nn.Module):
    """x + Attention(x), then + ffn (1x1 to 2C with SiLU, 1x1 back, linear): `attn`, `ffn_0`,
    `ffn_1`. [B, H, W, C] → [B, H, W, C]."""

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c = x.shape[-1]
        x = x + Attention(self.heads, self.dtype, name="attn")(x, train)
        y = ConvNormAct(2 * c, dtype=self.dtype, name="ffn_0")(x, train)
        return x + ConvNormAct(c, act=False, dtype=self.dtype, name="ffn_1")(y, train)


class C2PSA(nn.Module):
    """cv1 (1x1) split in two halves, `depth` PSA blocks (heads = C / 128, at least 1) on the
    second, cv2 (1x1) over both. [B, H, W, C] → [B, H, W, C]."""

    depth: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        channels = x.shape[-1]
        c = channels // 2
        y = ConvNormAct(2 * c, dtype=self.dtype, name="cv1")(x, train)
        a, b = y[..., :c], y[..., c:]
        for i in range(self.depth):
            b = PSABlock(max(c // 64, 1), self.dtype, name=f"m_{i}")(b, train)
        return ConvNormAct(channels, dtype=self.dtype, name="cv2")(
            jnp.concatenate([a, b], axis=-1), train
        )
