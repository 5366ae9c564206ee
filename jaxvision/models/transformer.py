"""The transformer pieces the zoo's transformers share (the ViT, the image-text text tower,
Mixer's MLP): pre-norm encoder blocks, self-attention through `jax.nn.dot_product_attention`,
the MLP, big_vision's MAP (multi-head attention pooling) head, the LayerNorm and activations,
and the logical axis names that tensor parallelism splits. Kernel layouts are big_vision's
(query/key/value [D, heads, D/heads], out [heads, D/heads, D]); submodule names timm's."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.attention import attention_implementation, cudnn_attention
from jaxvision.models.layers import DropPath, record_attention, wants_attention

# Logical axis names of the kernels, for tensor parallelism: `jaxvision.sharding.LOGICAL_RULES`
# maps "mlp" and "heads" to the mesh's model axis and keeps "embed"/"kv" whole (Megatron-style).
# Without rules the annotations change nothing; `model.init` returns `nn.LogicallyPartitioned`
# boxes, which `model.apply` reads as they are and `nn.meta.unbox` strips (the train state does).
EMBED_MLP = ("embed", "mlp")
MLP_EMBED = ("mlp", "embed")
EMBED_HEADS_KV = ("embed", "heads", "kv")
HEADS_KV_EMBED = ("heads", "kv", "embed")


def partitioned(init, axes: tuple[str | None, ...]):
    """`init` with logical `axes` (one name, or None, per dimension of the parameter)."""
    return nn.with_logical_partitioning(init, axes)


def layer_norm(name: str, dtype: Any, epsilon: float = 1e-6) -> nn.LayerNorm:
    # timm's eps; two-pass variance, as torch, so imported models match to 1e-5.
    return nn.LayerNorm(
        epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, use_fast_variance=False, name=name
    )


# The MLP's nonlinearity: torch's exact GELU (timm, open_clip), its tanh approximation (flax's
# default, so big_vision's SigLIP), or OpenAI CLIP's x * sigmoid(1.702 x).
ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


class MlpBlock(nn.Module):
    """fc1 → `activation` (exact GELU, torch's, by default) → dropout → fc2.
    x: [..., D] → [..., D]."""

    mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    kernel_init: Any = nn.initializers.xavier_uniform()
    axes: tuple[tuple[str | None, ...], tuple[str | None, ...]] = (EMBED_MLP, MLP_EMBED)
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        dense = functools.partial(
            nn.Dense,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        fc1_init, fc2_init = (partitioned(self.kernel_init, axes) for axes in self.axes)
        bias_init = nn.initializers.normal(1e-6)  # big_vision: tiny, not zero
        fc1_bias_init = partitioned(bias_init, self.axes[0][-1:])
        y = dense(self.mlp_dim, kernel_init=fc1_init, bias_init=fc1_bias_init, name="fc1")(x)
        y = ACTIVATIONS[self.activation](y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return dense(x.shape[-1], kernel_init=fc2_init, bias_init=bias_init, name="fc2")(y)


class Attention(nn.Module):
    """Multi-head self-attention through `jax.nn.dot_product_attention`. x: [B, N, D] → [B, N, D].

    Kernels: query/key/value [D, heads, D/heads], out [heads, D/heads, D] (big_vision's layout).
    `implementation`: see `attention_implementation`. `causal`: token i attends to tokens <= i
    only (a text tower read left to right, CLIP's).
    """

    num_heads: int
    dtype: Any = jnp.float32
    implementation: str = "auto"
    causal: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        width = x.shape[-1]
        if width % self.num_heads:
            raise UserError(f"ViT width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        qkv = functools.partial(
            nn.DenseGeneral,
            features=(self.num_heads, head_dim),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), EMBED_HEADS_KV),
            bias_init=partitioned(nn.initializers.zeros, EMBED_HEADS_KV[1:]),
        )
        q, k, v = (qkv(name=name)(x) for name in ("query", "key", "value"))  # [B, N, H, Dh]
        if wants_attention():  # explicit weights, for attention rollout (jaxvision.explain)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / head_dim**0.5
            if self.causal:
                n = logits.shape[-1]
                logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -jnp.inf)
            weights = jax.nn.softmax(logits, axis=-1)
            record_attention(self.scope.path, weights)
            y = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
        else:
            impl = attention_implementation(self.implementation, self.dtype, head_dim)
            if impl == "cudnn":
                y = cudnn_attention(q, k, v, is_causal=self.causal)
            else:
                y = jax.nn.dot_product_attention(
                    q, k, v, is_causal=self.causal, implementation=impl
                )
        return nn.DenseGeneral(
            features=width,
            axis=(-2, -1),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), HEADS_KV_EMBED),
            name="out",
        )(y)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block (timm's `Block`). x: [B, N, D] → [B, N, D]."""

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    attention: str = "auto"
    causal: bool = False
    activation: str = "gelu"
    norm_epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = layer_norm("norm1", self.dtype, self.norm_epsilon)(x)
        y = Attention(self.num_heads, self.dtype, self.attention, self.causal, name="attn")(y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        x = x + DropPath(self.drop_path_rate)(y, train)
        y = layer_norm("norm2", self.dtype, self.norm_epsilon)(x)
        mlp = MlpBlock(
            self.mlp_dim, self.dtype, self.dropout_rate, activation=self.activation, name="mlp"
        )
        y = mlp(y, train)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return x + DropPath(self.drop_path_rate)(y, train)


class MAPHead(nn.Module):
    """Multi-head attention pooling (big_vision's `MAPHead`): a learned probe token attends to
    the tokens, then a pre-norm MLP is added to it. x: [B, N, D] → [B, D].

    Parameters: `probe` [1, 1, D]; `attn/query|key|value` [D, heads, D/heads] and `attn/out`
    [heads, D/heads, D] (big_vision's `MultiHeadDotProductAttention_0`); `norm`
    (`LayerNorm_0`); `mlp/fc1|fc2` (`MlpBlock_0`). As big_vision: no residual around the
    attention, xavier-uniform probe and kernels.
    """

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    activation: str = "gelu"
    norm_epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, _, width = x.shape
        if width % self.num_heads:
            raise UserError(f"MAP head width {width} is not divisible by {self.num_heads} heads")
        head_dim = width // self.num_heads
        probe = self.param(
            "probe",
            partitioned(nn.initializers.xavier_uniform(), (None, None, "embed")),
            (1, 1, width),
            jnp.float32,
        )
        probe = jnp.broadcast_to(probe, (b, 1, width)).astype(x.dtype)
        attn = _MAPAttention(self.num_heads, head_dim, self.dtype, name="attn")
        y = attn(probe, x)  # [B, 1, D]
        z = layer_norm("norm", self.dtype, self.norm_epsilon)(y)
        y = y + MlpBlock(self.mlp_dim, self.dtype, activation=self.activation, name="mlp")(z, False)
        return y[:, 0]


class _MAPAttention(nn.Module):
    """The probe's cross-attention: queries [B, 1, D] over tokens [B, N, D] → [B, 1, D]."""

    num_heads: int
    head_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, probe: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        dense = functools.partial(
            nn.DenseGeneral,
            features=(self.num_heads, self.head_dim),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), EMBED_HEADS_KV),
            bias_init=partitioned(nn.initializers.zeros, EMBED_HEADS_KV[1:]),
        )
        q, k, v = dense(name="query")(probe), dense(name="key")(x), dense(name="value")(x)
        y = jax.nn.dot_product_attention(q, k, v)
        return nn.DenseGeneral(
            features=x.shape[-1],
            axis=(-2, -1),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(nn.initializers.xavier_uniform(), HEADS_KV_EMBED),
            name="out",
        )(y)
