"""Trains the same few steps on 1 device and on all devices; prints both as JSON.

Run by test_multidevice.py in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts).
"""

import json

import jax
import numpy as np
import optax

from jaxvision import models
from jaxvision.sharding import batch_sharding, make_mesh, replicated
from jaxvision.train import optim, steps
from jaxvision.train.state import init_train_state


def run(devices, num_steps=3):
    mesh = make_mesh([("data", -1)], devices=devices)
    model = models.build("resnet18", num_classes=10, stem="small", width=8)
    tx = optim.make_optimizer("sgd", optax.constant_schedule(0.01), weight_decay=1e-4)
    init = lambda rng: init_train_state(model, tx, rng, (8, 8, 1))  # noqa: E731
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    state_sharding = jax.tree.map(lambda _: replicated(mesh), abstract)
    state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(0))
    step = steps.jit_train_step(
        steps.make_train_step(model, tx, mean=(127.5,), std=(64.0,)),
        mesh,
        state_sharding,
        batch_sharding(mesh),
    )
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(num_steps):
        batch = {
            "image": rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8),
            "label": rng.integers(0, 10, (16,), dtype=np.int32),
        }
        batch = jax.device_put(batch, batch_sharding(mesh))
        state, metrics = step(state, batch)
        losses.append(float(metrics["train/loss"]))
    mean_stats = jax.tree.leaves(state.batch_stats)[0]
    return {
        "devices": len(devices),
        "losses": losses,
        "batch_stats_first": np.asarray(mean_stats).tolist(),
        "param_sum": float(sum(np.abs(np.asarray(p)).sum() for p in jax.tree.leaves(state.params))),
        "batch_sharded_over": len(batch["image"].sharding.device_set),
    }


if __name__ == "__main__":
    print(json.dumps([run(jax.devices()[:1]), run(jax.devices())]))
