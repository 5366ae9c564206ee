"""The train step every task shares, the eval step, and how both are jitted over a mesh.

A task (jaxvision.tasks) says what a step computes: `prepare` the batch on the device, the
`loss` of one model's parameters, the `eval_outputs` of a batch. This module applies the rest
the same way for every task: micro-batch accumulation, frozen parameters, the optimizer update,
the EMA of the weights and the step's metrics.

Nothing here imports TensorFlow or the data code: benchmarks drive these steps with synthetic
batches on machines that have neither.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from jaxvision.sharding import replicated
from jaxvision.train.ema import ema_update
from jaxvision.train.optim import frozen_mask
from jaxvision.train.state import TrainState


def split_microbatches(batch: dict, num: int) -> dict:
    """[B, ...] leaves -> [num, B / num, ...]; micro-batch i takes rows i, i + num, i + 2 num...

    Strided rather than contiguous so that each device's share of a batch split over the mesh
    holds an equal part of every micro-batch: no data moves between devices.
    """

    def split(x):
        if x.shape[0] % num:
            raise ValueError(f"batch of {x.shape[0]} does not split into {num} micro-batches")
        return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


@dataclasses.dataclass(frozen=True)
class UpdateOptions:
    """How the trained model's parameters are updated, whatever the task.

    microbatches: k > 1 accumulates the gradients of k micro-batches of B / k inside the step
        (one optimizer update, activation memory of B / k); BatchNorm then sees B / k at a time.
    ema_decay: with a model that keeps `ema_params`, their decay per update (ema_warmup: timm's
        min(decay, (1 + step) / (10 + step)); ema_ramp > 0 instead: decay x (1 - exp(-updates /
        ema_ramp)), the YOLO reference's).
    frozen: the optimizer's `frozen` (a path predicate or a tree of bools). Frozen parameters
        enter the loss through `stop_gradient`, so the backward pass skips everything only they
        need (a linear probe differentiates the head alone); their gradients are zero.
    learning_rate: the schedule, to report `train/lr`; None: not reported.
    """

    microbatches: int = 1
    ema_decay: float = 0.0
    ema_warmup: bool = True
    frozen: Any = None
    learning_rate: optax.Schedule | None = None
    ema_ramp: float = 0.0


def make_train_step(
    task, tx: optax.GradientTransformation, options: UpdateOptions = UpdateOptions()
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns `train_step(state, batch) -> (state, metrics)` that updates the model
    `task.trained` with `tx` on `task.loss`.

    The task provides:
      prepare(batch, rng, models) -> (inputs, rng): device-side work the gradient does not flow
          through (normalisation, mixing, a frozen teacher's outputs);
      loss(params, mutable, inputs, rng, models) -> (loss, (metrics, new mutable collections)).
    Under jit over a mesh the batch is global, so BatchNorm statistics and the mean loss are over
    the whole global batch. metrics: `train/loss`, the task's `train/<name>` scalars,
    `train/grad_norm` and (given `options.learning_rate`) `train/lr`.
    """
    microbatches, frozen = options.microbatches, options.frozen

    def loss_and_grads(params, mutable, batch, rng, models):
        inputs, rng = task.prepare(batch, rng, models)

        def loss_fn(params):
            if frozen is not None:
                params = jax.tree.map(
                    lambda p, f: jax.lax.stop_gradient(p) if f else p,
                    params,
                    frozen_mask(frozen, params),
                )
            return task.loss(params, mutable, inputs, rng, models)

        (loss, (metrics, new_mutable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, metrics, new_mutable, grads

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        model = state.models[task.trained]
        rng = jax.random.fold_in(model.rng, state.step)
        if microbatches == 1:
            loss, metrics, mutable, grads = loss_and_grads(
                model.params, model.mutable, batch, rng, state.models
            )
        else:

            def accumulate(carry, micro):
                index, mutable, sums = carry
                micro_rng = jax.random.fold_in(rng, index)
                loss, metrics, mutable, grads = loss_and_grads(
                    model.params, mutable, micro, micro_rng, state.models
                )
                sums = jax.tree.map(jnp.add, sums, (loss, metrics, grads))
                return (index + 1, mutable, sums), None

            metric_shapes = jax.eval_shape(
                loss_and_grads, model.params, model.mutable, batch, rng, state.models
            )[1]
            zeros = jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype),
                (jnp.float32(0), metric_shapes, model.params),
            )
            carry = (jnp.int32(0), model.mutable, zeros)
            (_, mutable, sums), _ = jax.lax.scan(
                accumulate, carry, split_microbatches(batch, microbatches)
            )
            loss, metrics, grads = jax.tree.map(lambda x: x / microbatches, sums)
        updates, opt_state = tx.update(grads, model.opt_state, model.params)
        params = optax.apply_updates(model.params, updates)
        ema_params = model.ema_params
        if ema_params is not None:
            ema_params = ema_update(
                ema_params,
                params,
                model.step,
                options.ema_decay,
                options.ema_warmup,
                options.ema_ramp,
            )
        model = model.replace(
            variables={**model.variables, **mutable, "params": params},
            opt_state=opt_state,
            step=model.step + 1,
            ema_params=ema_params,
        )
        new_state = state.replace(step=state.step + 1, models={**state.models, task.trained: model})
        metrics = {
            "train/loss": loss,
            **{f"train/{k}": v for k, v in metrics.items()},
            "train/grad_norm": optax.tree.norm(grads),
        }
        if options.learning_rate is not None:
            metrics["train/lr"] = options.learning_rate(state.step)
        return new_state, metrics

    return train_step


def make_eval_step(task) -> Callable[[TrainState, dict], dict]:
    """Returns `eval_step(state, batch) -> task.eval_outputs(state.models, batch)`.

    batch: the task's fields plus "mask": [B] bool; padded examples (mask False) count nowhere.
    """
    return lambda state, batch: task.eval_outputs(state.models, batch)


def jit_train_step(
    train_step, mesh: Mesh, state_sharding, batch_sharding: NamedSharding
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """jit with explicit shardings; the input state is donated (its buffers become the output's)."""
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )


def jit_eval_step(eval_step, mesh: Mesh, state_sharding, batch_sharding: NamedSharding):
    return jax.jit(
        eval_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=replicated(mesh),
    )
