"""Making the training state (`jaxvision.state`'s ModelState / TrainState, re-exported here):
fresh models, their abstract shapes and logical shardings, the legacy checkpoint layout."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from jaxvision.state import ModelState, TrainState
from jaxvision.tasks.images import image_model_init  # noqa: F401 (the training programs' name)
from jaxvision.train.ema import ema_init


def init_model_state(
    init_variables: Callable[[jax.Array], dict],
    tx: optax.GradientTransformation | None,
    rng: jax.Array,
    *,
    ema: bool = False,
) -> ModelState:
    """A fresh model: `init_variables(rng) -> {"params", ...}` (e.g. `model.init` on an example
    batch), the optimizer state of `tx` (None: frozen) and with `ema` an average of the weights.

    Pure, so it can be jitted with output shardings (every device builds only its shard) or
    traced with `jax.eval_shape` to get the structure without allocating it.
    """
    init_rng, state_rng = jax.random.split(rng)
    # Logical-axis annotations (nn.LogicallyPartitioned boxes) have done their job once
    # `logical_param_specs` has read them: the state holds plain arrays.
    variables = dict(nn.meta.unbox(init_variables(init_rng)))
    params = variables["params"]
    return ModelState(
        variables=variables,
        opt_state=None if tx is None else tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=state_rng,
        ema_params=ema_init(params) if ema else None,
    )


def init_train_state(models: dict[str, ModelState]) -> TrainState:
    """A run's state at step 0 from its fresh models ({name: `init_model_state(...)`})."""
    return TrainState(step=jnp.zeros((), jnp.int32), models=models)


def _abstract_variables(model: nn.Module, image_shape):
    """The model's variables as `jax.ShapeDtypeStruct`s (still boxed): nothing is allocated."""
    dummy = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    rng = jax.random.PRNGKey(0)
    return jax.eval_shape(
        lambda x: model.init({"params": rng, "dropout": rng}, x, train=False), dummy
    )


def abstract_params(model: nn.Module, image_shape):
    """The parameters' shapes and dtypes (`jax.ShapeDtypeStruct`s), without allocating them."""
    return nn.meta.unbox(_abstract_variables(model, image_shape))["params"]


def logical_param_specs(model: nn.Module, image_shape):
    """The logical PartitionSpec each parameter is annotated with (`P()` where none), from an
    abstract init: nothing is allocated."""
    return nn.get_partition_spec(_abstract_variables(model, image_shape))["params"]


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def legacy_layout(state):
    """`state` (one model, "model") in the layout checkpoints had before runs held named models:
    {"step", "params", "batch_stats", "opt_state", "rng", "ema_params"}. Works on arrays,
    abstract values and shardings alike."""
    model = state.models["model"]
    return {
        "step": state.step,
        "params": model.variables["params"],
        "batch_stats": model.variables.get("batch_stats", {}),
        "opt_state": model.opt_state,
        "rng": model.rng,
        "ema_params": model.ema_params,
    }


def from_legacy_layout(tree: dict) -> TrainState:
    """The `TrainState` of a checkpoint in `legacy_layout`."""
    variables = {"params": tree["params"]}
    if tree.get("batch_stats"):
        variables["batch_stats"] = tree["batch_stats"]
    model = ModelState(
        variables=variables,
        opt_state=tree["opt_state"],
        step=jnp.copy(tree["step"]),  # its own buffer: the step donates the state's
        rng=tree["rng"],
        ema_params=tree.get("ema_params"),
    )
    return TrainState(step=tree["step"], models={"model": model})
