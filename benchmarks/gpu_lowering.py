"""What a GPU will run, read from any machine: the train step exported for CUDA, op by op.

  python -m benchmarks.gpu_lowering [--models=resnet50,vit_b16] [--batch_size=8] \\
      [--dtype=bfloat16] [--platform=cuda]

`jax.export` lowers for a platform the host does not have, from abstract shapes (no arrays, no
device). Each model's train step (the one experiments run: jaxvision.train.steps with the
classification task, SGD for CNNs and AdamW for ViTs) is exported for `--platform` inside
`attention.traced_for(platform)`, so attention is chosen for the target, not this host. One JSON
line per model: the lowering time, every convolution and dot_general by input dtypes, and the
custom calls (cuDNN's fused attention is `__cudnn$fmha...`). Under bfloat16 every convolution
and dot_general of the step, forward and backward, should take bf16 inputs (the float32 master
weights are cast before use; the optimizer and the gradient norm use none):
tests/models/test_cuda_export.py checks that on tiny models.
"""

import collections
import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax import export

from jaxvision import models
from jaxvision.models import attention, vit
from jaxvision.tasks.classification import Classification
from jaxvision.train import optim, steps
from jaxvision.train.state import init_model_state, init_train_state

# cuDNN's fused attention (forward and backward), which carries no compatibility guarantee
# across jax versions: an export that holds it runs on the jaxlib that wrote it.
CUDNN_ATTENTION = ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")

_OP = re.compile(r"stablehlo\.(convolution|dot_general)\b")
_OPERANDS = re.compile(r":\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)\s*->")
_CUSTOM_CALL = re.compile(r"stablehlo\.custom_call @([\w$.]+)")


def element_type(tensor: str) -> str:
    """`tensor<8x224x224x3xbf16>` -> "bf16"."""
    return tensor[len("tensor<") : -1].split("x")[-1]


def lowered_ops(stablehlo: str) -> dict:
    """Counts in StableHLO text: {"convolution": {"bf16,bf16": n, ...}, "dot_general": {...},
    "custom_call": {target: n}}; an op's key is its two input element types."""
    found = {"convolution": collections.Counter(), "dot_general": collections.Counter()}
    for line in stablehlo.splitlines():
        op = _OP.search(line)
        if op:
            operands = _OPERANDS.search(line)
            types = [element_type(t) for t in operands.groups()] if operands else ["?"]
            found[op.group(1)][",".join(types)] += 1
    found["custom_call"] = collections.Counter(_CUSTOM_CALL.findall(stablehlo))
    return {k: dict(v) for k, v in found.items()}


def build(name: str, dtype: str = "bfloat16", image_size: int = 224, num_classes: int = 1000):
    """Model `name` of the registry at `image_size`, computing in `dtype`."""
    kwargs = {"image_size": image_size} if "image_size" in models.options(name) else {}
    return models.build(name, num_classes=num_classes, dtype=jnp.dtype(dtype), **kwargs)


def export_train_step(
    model, *, batch_size: int, image_size: int = 224, platform: str = "cuda"
) -> export.Exported:
    """The train step of `model` (a Flax module) exported for `platform` from abstract shapes.

    The state and the batch ({"image": uint8 [B, S, S, 3], "label": int32 [B]}) are
    ShapeDtypeStructs: no arrays, one device, no sharding. SGD for CNNs, AdamW for ViTs."""
    optimizer = "adamw" if isinstance(model, vit.ViT) else "sgd"
    tx = optim.make_optimizer(optimizer, optax.constant_schedule(0.1), weight_decay=1e-4)
    task = Classification(model, mean=(127.5,) * 3, std=(64.0,) * 3)
    example = {"image": np.zeros((1, image_size, image_size, 3), np.uint8)}

    def init(rng):
        return init_train_state({"model": init_model_state(task.init_variables(example), tx, rng)})

    with attention.traced_for(platform):
        state = jax.eval_shape(init, jax.random.PRNGKey(0))
        batch = {
            "image": jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8),
            "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
        }
        step = jax.jit(steps.make_train_step(task, tx), donate_argnums=0)
        checks = [export.DisabledSafetyCheck.custom_call(t) for t in CUDNN_ATTENTION]
        return export.export(step, platforms=[platform], disabled_checks=checks)(state, batch)


_MODELS = flags.DEFINE_list("models", ["resnet50", "vit_b16"], "Models to export.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size of the exported step.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype (parameters stay float32).")
_PLATFORM = flags.DEFINE_string("platform", "cuda", "jax.export platform: cuda, rocm, tpu, cpu.")


def main(argv):
    del argv
    for name in _MODELS.value:
        started = time.perf_counter()
        model = build(name, _DTYPE.value)
        exported = export_train_step(model, batch_size=_BATCH.value, platform=_PLATFORM.value)
        text = exported.mlir_module()
        row = {"model": name, "platform": _PLATFORM.value, "dtype": _DTYPE.value}
        row["export_s"] = round(time.perf_counter() - started, 1)
        row |= lowered_ops(text)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    app.run(main)
