"""What a GPU will run, checked on this CPU: train steps exported for CUDA (jax.export lowers
for a platform the host lacks) take bf16 into every convolution and matmul under bfloat16, and
ViT attention is cuDNN's fused kernel when the target is a GPU. ResNet-50 and ViT-B/16 at full
size (about 2 s each, abstract shapes only); tiny models for the rest.
`python -m benchmarks.gpu_lowering` prints the same counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.gpu_lowering import build, export_train_step, lowered_ops
from jaxvision.models import attention, resnet, vit

FMHA = "__cudnn$fmhaSoftmax"
FMHA_BACKWARD = "__cudnn$fmhaSoftmaxBackward"
# 32 px in 16 px patches: 4 patches and the class token, an odd 5 tokens (cudnn_attention pads).
TINY_VIT = dict(
    num_classes=10, patch_size=16, width=64, depth=2, mlp_dim=128, num_heads=2, image_size=32
)


def ops(model, platform="cuda", image_size=32):
    exported = export_train_step(model, batch_size=2, image_size=image_size, platform=platform)
    assert exported.platforms == (platform,)
    return lowered_ops(exported.mlir_module())


@pytest.mark.slow
def test_vit_b16_for_cuda_in_bf16_runs_bf16_matmuls_and_cudnn_attention():
    found = ops(build("vit_b16", "bfloat16"), image_size=224)
    assert found["convolution"] == {"bf16,bf16": 2}  # the patch embedding, and its gradient
    assert set(found["dot_general"]) == {"bf16,bf16"}, found["dot_general"]
    # One fused attention per block forward, one backward (197 tokens: padded to 198).
    assert found["custom_call"].get(FMHA) == 12
    assert found["custom_call"].get(FMHA_BACKWARD) == 12


@pytest.mark.slow
def test_resnet50_for_cuda_in_bf16_runs_bf16_convolutions():
    found = ops(build("resnet50", "bfloat16"), image_size=224)
    # 53 convolutions forward, 53 weight gradients, 52 input gradients (none for the image)
    assert found["convolution"] == {"bf16,bf16": 158}
    assert set(found["dot_general"]) == {"bf16,bf16"}, found["dot_general"]


def test_the_cpu_program_and_float32_keep_xla_attention():
    for model, platform in [
        (vit.ViT(**TINY_VIT, dtype=jnp.bfloat16), "cpu"),
        (vit.ViT(**TINY_VIT, dtype=jnp.float32), "cuda"),  # cuDNN's kernel is bf16/fp16 only
    ]:
        found = ops(model, platform)
        assert not any("cudnn" in target for target in found["custom_call"]), found
    assert attention.target_platform() == jax.default_backend() == "cpu"  # nothing left behind


def test_float32_compute_stays_float32():
    model = resnet.ResNet(
        stage_sizes=(1, 1), block_cls=resnet.Bottleneck, num_classes=10, width=8, stem="small"
    )
    assert set(ops(model)["convolution"]) == {"f32,f32"}  # the check reads the program's types
    assert set(ops(model.clone(dtype=jnp.bfloat16))["convolution"]) == {"bf16,bf16"}


def test_the_odd_length_padding_of_cudnn_attention_changes_nothing(monkeypatch):
    """cudnn_attention pads 5 tokens to 6 and masks the extra one; with XLA standing in for
    cuDNN (same arguments, same padding mask) it equals plain attention on the 5 tokens."""
    real = jax.nn.dot_product_attention
    asked = []

    def xla_for_cudnn(*args, implementation=None, **kwargs):
        asked.append((implementation, args[0].shape[1]))
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", xla_for_cudnn)
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 5, 4, 8))
    got = jax.jit(attention.cudnn_attention)(q, k, v)
    assert asked == [("cudnn", 6)]
    np.testing.assert_allclose(got, real(q, k, v), rtol=1e-6, atol=1e-6)
    grad = jax.jit(jax.grad(lambda q, k, v: attention.cudnn_attention(q, k, v).sum()))
    want = jax.jit(jax.grad(lambda q, k, v: real(q, k, v).sum()))
    np.testing.assert_allclose(grad(q, k, v), want(q, k, v), rtol=1e-5, atol=1e-6)


def test_an_explicit_cudnn_choice_off_gpu_is_still_refused():
    with pytest.raises(Exception, match="attention='cudnn' needs a CUDA GPU, but JAX runs on cpu"):
        attention.attention_implementation("cudnn", jnp.bfloat16, 64)
    with attention.traced_for("cuda"):
        assert attention.attention_implementation("cudnn", jnp.bfloat16, 64) == "cudnn"
        assert attention.attention_implementation("auto", jnp.bfloat16, 64) == "cudnn"
