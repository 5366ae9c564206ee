"""Trains a small ViT and a small ResNet a few steps under each sharding strategy on 8 devices
and on 1 device; prints losses, compile counts and the resulting PartitionSpecs as JSON.

Run by test_sharding_strategies.py in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts).
"""

import json
import tempfile

import jax
import numpy as np
import optax
from flax import traverse_util

from jaxvision.checkpoint import Checkpointer
from jaxvision.models import resnet
from jaxvision.models.vit import ViT
from jaxvision.sharding import batch_sharding, make_mesh, param_specs, state_shardings
from jaxvision.tasks.classification import Classification
from jaxvision.train import optim, steps
from jaxvision.train.state import init_model_state, init_train_state, logical_param_specs

MODELS = {
    "vit": lambda: ViT(
        num_classes=10, patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=4, image_size=8
    ),
    # A ResNet-10 (one BasicBlock per stage): every kind of layer of a ResNet-18 (the stages'
    # strided and identity shortcuts, BatchNorm), half the blocks to compile.
    "resnet": lambda: resnet.ResNet(
        (1, 1, 1, 1), resnet.BasicBlock, num_classes=10, stem="small", width=8
    ),
}
LAYOUTS = {
    "single": ("replicated", [("data", 1)]),
    "replicated": ("replicated", [("data", -1)]),
    "fsdp": ("fsdp", [("data", 2), ("fsdp", -1)]),
    "fsdp+tensor": ("fsdp+tensor", [("data", 2), ("fsdp", 2), ("model", 2)]),
}


def _spec_strings(shardings):
    flat = traverse_util.flatten_dict(shardings, sep="/")
    return {k: str(tuple(v.spec)) for k, v in flat.items()}


_INITIAL = {}  # model name -> its initial train state, built once on one device


def _save_compiles(state):
    """How many programs saving `state` as a checkpoint lowers (compiled or from the cache)."""
    events = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with tempfile.TemporaryDirectory() as directory:
            checkpointer = Checkpointer(directory)
            checkpointer.save(1, state, force=True)
            checkpointer.close()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return len(events)


def run(model_name, layout, num_steps=3):
    strategy, axes = LAYOUTS[layout]
    devices = jax.devices()[:1] if layout == "single" else jax.devices()
    mesh = make_mesh(axes, devices=devices)
    model = MODELS[model_name]()
    tx = optim.make_optimizer("adamw", optax.constant_schedule(1e-3), weight_decay=1e-4)
    task = Classification(model, mean=(127.5,), std=(64.0,))
    example = {"image": np.zeros((1, 8, 8, 1), np.uint8)}

    def init(rng):
        return init_train_state({"model": init_model_state(task.init_variables(example), tx, rng)})

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    logical = logical_param_specs(model, (8, 8, 1))
    specs = param_specs(
        abstract.models["model"].params, mesh, strategy, logical_specs=logical, fsdp_min_size=256
    )
    shardings = state_shardings(abstract, mesh, {"model": specs})
    # One init program per model, its state (on the host) placed under each layout's
    # shardings: the same starting values everywhere, and one compile instead of four.
    if model_name not in _INITIAL:
        _INITIAL[model_name] = jax.device_get(jax.jit(init)(jax.random.PRNGKey(0)))
    state = jax.device_put(_INITIAL[model_name], shardings)
    step = steps.jit_train_step(
        steps.make_train_step(task, tx),
        mesh,
        shardings,
        batch_sharding(mesh),
    )
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(num_steps):
        batch = {
            "image": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
            "label": rng.integers(0, 10, (16,), dtype=np.int32),
        }
        state, metrics = step(state, batch)
        losses.append(float(metrics["train/loss"]))
    trained = state.models["model"]
    save_compiles = _save_compiles(state) if layout == "replicated" else None
    adam_state = trained.opt_state[0][0]  # chain(adamw) -> (scale_by_adam, ...) -> mu/nu
    return {
        "losses": losses,
        "compiles": step._cache_size(),
        "save_compiles": save_compiles,
        "params": _spec_strings(jax.tree.map(lambda x: x.sharding, trained.params)),
        "mu": _spec_strings(jax.tree.map(lambda x: x.sharding, adam_state.mu)),
        # BatchNorm running statistics (global-batch statistics under every layout).
        "batch_stats": [
            np.asarray(x).ravel()[:8].tolist()
            for x in jax.tree.leaves(trained.variables.get("batch_stats", {}))
        ],
        "param_bytes_per_device": sum(
            x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(trained.params)
        ),
    }


if __name__ == "__main__":
    print(json.dumps({m: {lay: run(m, lay) for lay in LAYOUTS} for m in MODELS}))
