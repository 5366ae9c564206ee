"""Which attention kernel a ViT runs, chosen for the platform it is traced for.

`jax.nn.dot_product_attention` has two implementations: XLA's composition of matmuls and a
softmax (every platform) and cuDNN's fused flash kernel (CUDA GPUs, bf16/fp16). "auto" picks the
fused one for a CUDA *target*: the backend JAX runs on, or the platform named by `traced_for`
around an export for GPUs from a CPU host (`jax.export` lowers for absent platforms).
"""

import contextlib
import contextvars
from typing import Any

import jax
import jax.numpy as jnp

from jaxvision.errors import UserError

# The platform models are traced for, when it is not the one JAX runs on (an export for GPUs
# from a CPU host); None: jax.default_backend().
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)
CUDA_PLATFORMS = ("gpu", "cuda")  # jax.default_backend() says "gpu", jax.export "cuda"


def target_platform() -> str:
    """The platform attention is chosen for: `traced_for`'s, else the one JAX runs on."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def traced_for(platform: str, cudnn_version: int = 90100):
    """Chooses attention kernels for `platform` ("cpu", "cuda", "tpu"...) while tracing inside,
    e.g. around `jax.export.export(..., platforms=["cuda"])` on a CPU host, which otherwise gets
    the host's choice (XLA attention) in its GPU program.

    jax traces cuDNN attention only where it finds cuDNN, to check the call against its version;
    on a host without one, `cudnn_version` (encoded as cuDNN does: 90100 is 9.1) stands in for
    the target's. It only gates jax's checks (features of 9.10 and later, for instance); the
    lowered call does not hold it. Nothing changes outside the `with`.
    """
    token = _TARGET.set(platform)
    try:
        with _assumed_cudnn(cudnn_version if platform in CUDA_PLATFORMS else None):
            yield
    finally:
        _TARGET.reset(token)


@contextlib.contextmanager
def _assumed_cudnn(version: int | None):
    # jax's own module (jax 0.10): no public way to lower cuDNN attention without cuDNN. Should
    # a jax release move it, this import fails loudly and tests/models/test_cuda_export.py says.
    from jax._src.cudnn import fused_attention_stablehlo as fused

    if version is None or fused.cuda_versions is not None:  # the host has cuDNN: use it
        yield
        return
    real = fused.check_cudnn_version
    fused.check_cudnn_version = lambda: version
    try:
        yield
    finally:
        fused.check_cudnn_version = real


def attention_implementation(choice: str, dtype: Any, head_dim: int) -> str:
    """The `jax.nn.dot_product_attention` implementation for `choice` ("auto", "xla", "cudnn").

    "auto" takes cuDNN's fused (flash) kernel where it applies: a CUDA target (the backend, or
    `traced_for`'s platform), bf16/fp16 compute and a head dimension that is a multiple of 8
    and at most 128 (every preset: 64, 80 or 88). Everywhere else, XLA's composition of softmax
    and two matmuls. jax's own default (`implementation=None`) is XLA on every backend, so GPUs
    would lose the fused kernel.
    """
    target = target_platform()
    on_gpu = target in CUDA_PLATFORMS
    if choice == "cudnn" and not on_gpu:
        raise UserError(
            f"attention='cudnn' needs a CUDA GPU, but JAX runs on {target}: "
            "use attention='auto' or 'xla'"
        )
    if choice == "auto":
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        fits = head_dim % 8 == 0 and head_dim <= 128
        return "cudnn" if on_gpu and half and fits else "xla"
    return choice


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, is_causal: bool = False) -> jax.Array:
    """cuDNN's fused attention. q, k, v: [B, N, H, Dh] -> [B, N, H, Dh].

    In training, jax (0.10) refuses cuDNN attention over an odd number of tokens (ViT-B/16's
    197: 196 patches and the class token): its gradient check takes the empty bias it passes
    for "none" for a bias, which needs even lengths. Such a sequence gets one zero token that
    the padding mask (`*_seq_lengths`) keeps out of every softmax, and its row is dropped.
    """
    tokens = q.shape[1]
    if tokens % 2 == 0:
        return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation="cudnn")
    pad = [(0, 0), (0, 1), (0, 0), (0, 0)]
    q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    lengths = jnp.full((q.shape[0],), tokens, jnp.int32)
    y = jax.nn.dot_product_attention(
        q,
        k,
        v,
        query_seq_lengths=lengths,
        key_value_seq_lengths=lengths,
        is_causal=is_causal,
        implementation="cudnn",
    )
    return y[:, :tokens]
