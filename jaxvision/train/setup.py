"""A run's state, its layout over the mesh and the `loop.Run` around them, for a task's named
models ("model"; "student" beside a frozen "teacher"; "generator" and "discriminator").

    run = make_run(
        task,
        {"model": NamedModel(task.init_variables(example), tx, ema=True)},
        mesh=mesh, sharding="fsdp", seed=0, train_step=train_step,
        train_source=..., train_transform=..., eval_transform=..., evals=..., class_names=...,
        total_steps=..., schedule=..., predictor=...,
    )

Every experiment program ends its `setup` with it: parameters are replicated, FSDP-sharded
and/or tensor-parallel by the sharding string (`jaxvision.sharding.param_specs`, with the
logical axes the models annotate), each optimizer state and EMA follow their parameters.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import linen as nn
from jax.sharding import Mesh

from jaxvision.sharding import batch_sharding, param_specs, state_shardings
from jaxvision.train import loop, reporting
from jaxvision.train.state import TrainState, count_params, init_model_state, init_train_state


@dataclasses.dataclass(frozen=True)
class NamedModel:
    """One model of a run, before any state exists.

    init_variables: `rng -> {"params", ...}` (e.g. `task.init_variables(example_batch)`); its
        logical-axis annotations, if any, give the tensor-parallel split.
    tx: its optimizer; None: frozen (no optimizer state).
    ema: keep an exponential moving average of its parameters.
    weights: a frozen model's trained variables (numpy trees), placed on its shards when the run
        starts fresh; a resumed run reads them back from its checkpoint with the rest.
    """

    init_variables: Callable[[jax.Array], dict]
    tx: optax.GradientTransformation | None = None
    ema: bool = False
    weights: Any = None


def init_state(named_models: dict[str, NamedModel]) -> Callable[[jax.Array], TrainState]:
    """`rng -> TrainState` at step 0: one model takes the run's key, several split it in order."""

    def init(rng: jax.Array) -> TrainState:
        names = list(named_models)
        rngs = [rng] if len(names) == 1 else list(jax.random.split(rng, len(names)))
        return init_train_state(
            {
                name: init_model_state(m.init_variables, m.tx, r, ema=m.ema)
                for (name, m), r in zip(named_models.items(), rngs, strict=True)
            }
        )

    return init


def model_param_specs(named_models: dict[str, NamedModel], abstract_state, mesh, sharding: str):
    """{name: PartitionSpecs of its parameters} under the sharding string ("replicated", "fsdp",
    "tensor", "fsdp+tensor"); tensor parallelism reads the models' logical annotations from an
    abstract init (nothing is allocated)."""
    specs = {}
    for name, m in named_models.items():
        logical = None
        if "tensor" in sharding:
            boxed = jax.eval_shape(m.init_variables, jax.random.PRNGKey(0))
            logical = nn.get_partition_spec(boxed)["params"]
        specs[name] = param_specs(
            abstract_state.models[name].params, mesh, sharding, logical_specs=logical
        )
    return specs


def make_run(
    task,
    named_models: dict[str, NamedModel],
    *,
    mesh: Mesh,
    sharding: str,
    seed: int,
    train_step: Callable,
    **run_fields,
) -> loop.Run:
    """The `loop.Run` of `task` over `named_models` ({name: NamedModel}, one of them
    `task.trained`): the init function and its key (`seed`), the abstract state, its shardings
    (by `sharding`, a `jaxvision.sharding.STRATEGIES` string) over `mesh`, the batch's sharding,
    and the loading of frozen models' weights.

    run_fields: the rest of `loop.Run` (train_source, train_transform, eval_transform, evals,
    class_names, total_steps, schedule, predictor).
    """
    init = init_state(named_models)
    rng = jax.random.PRNGKey(seed)
    abstract_state = jax.eval_shape(init, rng)
    state_sharding = state_shardings(
        abstract_state, mesh, model_param_specs(named_models, abstract_state, mesh, sharding)
    )
    pretrained = {name: m.weights for name, m in named_models.items() if m.weights is not None}

    def load_pretrained(state: TrainState) -> TrainState:
        for name, weights in pretrained.items():
            placed = jax.device_put(weights, state_sharding.models[name].variables)
            reporting.note(f"{name}: {count_params(placed['params']):,} parameters, frozen")
            state = state.replace_model(name, variables=placed)
        return state

    return loop.Run(
        mesh=mesh,
        data_sharding=batch_sharding(mesh),
        task=task,
        train_step=train_step,
        init=init,
        rng=rng,
        abstract_state=abstract_state,
        state_sharding=state_sharding,
        load_pretrained=load_pretrained if pretrained else None,
        **run_fields,
    )
