"""Training and inference throughput of the library's own models and train step, on synthetic
data already on the device.

  python -m benchmarks.throughput --model=resnet50 --batch_size=256 --mode=train \\
      --dtype=bfloat16 [--steps=50] [--sweep=64,128,256,512 --plot=r50_sweep.png]
  python -m benchmarks.throughput --model=vit_l16,vit_h14,vit_g14,vit_bigg14 --batch_size=32 \\
      --mesh="(('fsdp',-1),)" --sharding=fsdp --remat [--compile_only]     # largest that trains

Prints one JSON line per measurement: img/s, step time, TFLOP/s, MFU and HFU, peak device memory
and the XLA flags in force. FLOPs come from XLA's cost analysis. MFU counts the model's FLOPs: the
step as traced, before partitioning, without rematerialisation. HFU counts what the devices run:
the compiled per-device program times the device count, so it adds remat's recomputed forward
passes and work each device repeats (e.g. a replicated optimizer update). Runs on CPU too
(tiny sizes, as a test). Imports no TensorFlow: the step is the one experiments run
(jaxvision.train.steps), fed by `jax.random` batches instead of the input pipeline.
"""

import ast
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from jaxvision import models, xla_flags
from jaxvision.errors import UserError
from jaxvision.sharding import (
    abstract_like,
    batch_sharding,
    check_global_batch,
    make_mesh,
    param_specs,
    state_shardings,
)
from jaxvision.tasks.classification import Classification
from jaxvision.train import optim, steps
from jaxvision.train.state import (
    count_params,
    init_model_state,
    init_train_state,
    logical_param_specs,
)

_MODEL = flags.DEFINE_string("model", "resnet50", "Model name(s), comma-separated.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "infer"], "Full train step or forward.")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype (parameters stay float32).")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps after compilation.")
_IMAGE = flags.DEFINE_integer("image_size", 0, "Input size; 0: the model's (224, 299).")
_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classifier size.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "", "sgd or adamw; default sgd for CNNs, adamw else.")
_MESH = flags.DEFINE_string("mesh", "(('data',-1),)", "Mesh axes, as in config.mesh.")
_SHARDING = flags.DEFINE_string("sharding", "replicated", "Parameter sharding strategy.")
_REMAT = flags.DEFINE_bool("remat", False, "Recompute blocks in the backward pass (ViTs).")
_ATTENTION = flags.DEFINE_enum(
    "attention", None, ["auto", "xla", "cudnn"], "ViT attention kernel; default: the model's."
)
_SWEEP = flags.DEFINE_list("sweep", [], "Batch sizes to measure instead of --batch_size.")
_PLOT = flags.DEFINE_string("plot", "", "With --sweep: write img/s vs batch size to this PNG.")
_COMPILE_ONLY = flags.DEFINE_bool(
    "compile_only", False, "Compile and report FLOPs and planned memory; allocate and time nothing."
)

# Dense bf16 peak FLOP/s per device, for MFU (vendor figures, no sparsity).
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops(device) -> float | None:
    kind = device.device_kind
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops
    return None


def _build(name: str, image_size: int, remat: bool):
    kwargs = {}
    options = models.options(name)
    if "image_size" in options:
        kwargs["image_size"] = image_size
    if remat:
        if "remat" not in options:
            raise UserError(f"model '{name}' has no remat option: drop --remat")
        kwargs["remat"] = True
    if _ATTENTION.value:
        if "attention" not in options:
            raise UserError(f"model '{name}' has no attention option: drop --attention")
        kwargs["attention"] = _ATTENTION.value
    return models.build(name, num_classes=_CLASSES.value, dtype=jnp.dtype(_DTYPE.value), **kwargs)


def measure(name: str, batch_size: int) -> dict:
    """Compiles and times one model at one batch size; returns the JSON row.

    The step is compiled from abstract arrays, so `--compile_only` reports FLOPs and the memory
    XLA plans per device without allocating the model.
    """
    image_size = _IMAGE.value or (299 if name == "inception_v3" else 224)
    mesh = make_mesh(ast.literal_eval(_MESH.value))
    check_global_batch(batch_size, mesh)
    model = _build(name, image_size, _REMAT.value)
    optimizer = _OPTIMIZER.value or ("sgd" if name.startswith(("resnet", "vgg")) else "adamw")
    tx = optim.make_optimizer(optimizer, optax.constant_schedule(0.1), weight_decay=1e-4)
    shape = (image_size, image_size, 3)
    imagenet = {"mean": (123.7, 116.3, 103.5), "std": (58.4, 57.1, 57.4)}
    example = {"image": np.zeros((1, *shape), np.uint8)}

    def init(rng):
        init_variables = Classification(model, **imagenet).init_variables(example)
        return init_train_state({"model": init_model_state(init_variables, tx, rng)})

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    logical = logical_param_specs(model, shape) if "tensor" in _SHARDING.value else None
    specs = param_specs(
        abstract.models["model"].params, mesh, _SHARDING.value, logical_specs=logical
    )
    shardings = state_shardings(abstract, mesh, {"model": specs})
    data_sharding = batch_sharding(mesh)

    def make_batch(key):
        return {
            "image": jax.random.randint(key, (batch_size, *shape), 0, 256, jnp.int32).astype(
                jnp.uint8
            ),
            "label": jax.random.randint(key, (batch_size,), 0, _CLASSES.value, jnp.int32),
            "mask": jnp.ones((batch_size,), bool),
        }

    abstract_state = abstract_like(abstract, shardings)
    batch_shapes = jax.eval_shape(make_batch, jax.random.PRNGKey(1))
    abstract_batch = abstract_like(
        batch_shapes, jax.tree.map(lambda _: data_sharding, batch_shapes)
    )

    def jitted(model):
        task = Classification(model, **imagenet)
        if _MODE.value == "train":
            return steps.jit_train_step(
                steps.make_train_step(task, tx), mesh, shardings, data_sharding
            )
        return steps.jit_eval_step(steps.make_eval_step(task), mesh, shardings, data_sharding)

    started = time.perf_counter()
    lowered = jitted(model).lower(abstract_state, abstract_batch)
    step = lowered.compile()
    compile_s = time.perf_counter() - started
    hardware_flops = _flops(step) * jax.device_count()
    if _REMAT.value:  # the same step without recomputation, traced only
        lowered = jitted(_build(name, image_size, remat=False)).lower(
            abstract_state, abstract_batch
        )
    model_flops = _flops(lowered)
    device = jax.devices()[0]
    row = {
        "model": name,
        "mode": _MODE.value,
        "batch_size": batch_size,
        "image_size": image_size,
        "dtype": _DTYPE.value,
        "params": count_params(abstract.models["model"].params),
        "img_per_s": None,
        "step_ms": None,
        "tflop_per_s": None,
        "mfu": None,
        "hfu": None,
        "flops_per_step": model_flops,
        "hardware_flops_per_step": hardware_flops,
        "compile_s": round(compile_s, 1),
        "state_memory_gib": _state_memory_gib(abstract_state),
        "planned_memory_gib": _planned_memory_gib(step),
        "peak_memory_gib": None,
        "devices": f"{jax.device_count()} x {device.device_kind}",
        "mesh": dict(mesh.shape),
        "sharding": _SHARDING.value,
        "remat": _REMAT.value,
        "attention": getattr(model, "attention", None),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "tensorflow_loaded": "tensorflow" in sys.modules,
    }
    if _COMPILE_ONLY.value:
        return row

    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
    batch = jax.jit(make_batch, out_shardings=data_sharding)(jax.random.PRNGKey(1))

    def run(state, n):
        out = None
        for _ in range(n):
            if _MODE.value == "train":
                state, out = step(state, batch)
            else:
                out = step(state, batch)
        jax.block_until_ready(out)
        return state

    state = run(state, _WARMUP.value)
    started = time.perf_counter()
    run(state, _STEPS.value)
    seconds = (time.perf_counter() - started) / _STEPS.value

    stats = device.memory_stats() or {}
    peak = peak_flops(device)
    total_peak = peak * jax.device_count() if peak else None
    row.update(
        img_per_s=round(batch_size / seconds, 1),
        step_ms=round(1000 * seconds, 2),
        tflop_per_s=round(model_flops / seconds / 1e12, 2),
        mfu=round(model_flops / seconds / total_peak, 4) if peak else None,
        hfu=round(hardware_flops / seconds / total_peak, 4) if peak else None,
        peak_memory_gib=round(stats["peak_bytes_in_use"] / 2**30, 2)
        if "peak_bytes_in_use" in stats
        else None,
    )
    return row


def _state_memory_gib(abstract_state) -> float:
    """Bytes of the train state (parameters, optimizer state) on one device, from its sharding:
    the part of device memory that does not depend on the batch or the compiler."""
    total = sum(
        math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(abstract_state)
    )
    return round(total / 2**30, 2)


def _planned_memory_gib(compiled) -> float | None:
    """Device memory XLA's buffer assignment plans for one step: arguments, outputs not aliased
    to a donated argument, and temporaries (one device). Backend-specific: the CPU backend's
    schedule, for one, keeps remat's savings out of its plan."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
    )
    return round(total / 2**30, 2)


def _flops(stage) -> float:
    """FLOPs of a lowered (whole program) or compiled (one device's program) jit stage."""
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _is_out_of_memory(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def plot_sweep(rows: list[dict], path: str) -> None:
    """img/s against batch size, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name and "img_per_s" in r]
        ax.plot([r["batch_size"] for r in mine], [r["img_per_s"] for r in mine], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch size")
    ax.set_ylabel("images / s")
    ax.set_title(f"{_MODE.value} throughput, {rows[0]['dtype']}, {rows[0]['devices']}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    del argv
    xla_flags.apply()  # before anything initialises a JAX backend
    if _PLOT.value and _COMPILE_ONLY.value:
        print("error: --plot draws measured img/s: drop --compile_only", file=sys.stderr)
        sys.exit(2)
    batch_sizes = [int(b) for b in _SWEEP.value] or [_BATCH.value]
    rows = []
    for name in _MODEL.value.split(","):
        for batch_size in batch_sizes:
            try:
                row = measure(name, batch_size)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            except Exception as e:
                if not _is_out_of_memory(e):
                    raise
                row = {"model": name, "batch_size": batch_size, "error": "out of memory"}
            rows.append(row)
            print(json.dumps(row), flush=True)
    fitted = [r for r in rows if "error" not in r]
    # Only a timed run shows that a model fits; a compiled one has not allocated anything.
    if fitted and len(_MODEL.value.split(",")) > 1 and not _COMPILE_ONLY.value:
        largest = max(fitted, key=lambda r: r["params"])
        keys = ("params", "batch_size", "img_per_s", "mfu", "hfu", "peak_memory_gib")
        summary = {"largest_that_fits": largest["model"], **{k: largest[k] for k in keys}}
        print(json.dumps(summary), flush=True)
    if _PLOT.value:
        plot_sweep(rows, _PLOT.value)


if __name__ == "__main__":
    app.run(main)
