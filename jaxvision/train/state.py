"""The training state: one pytree of arrays that a step maps to the next one."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from jaxvision.train.ema import ema_init


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    step: int32 scalar, the number of updates applied so far (also the data position).
    params / batch_stats: the model's variable collections (batch_stats is {} without BatchNorm).
    opt_state: the optax state for `params`.
    rng: uint32 [2] raw PRNG key; each step folds in `step`, so steps never share randomness.
    ema_params: exponential moving average of `params` (None when the run keeps none).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None


def init_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    image_shape,
    *,
    ema: bool = False,
) -> TrainState:
    """Initialises a state for `model` on images of `image_shape` ([H, W, C]); with `ema` it
    also starts an exponential moving average of the parameters.

    Pure, so it can be jitted with output shardings (every device builds only its shard) or
    traced with `jax.eval_shape` to get the state's structure without allocating it.
    """
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init({"params": init_rng, "dropout": init_rng}, dummy, train=False)
    # Logical-axis annotations (nn.LogicallyPartitioned boxes) have done their job once
    # `logical_param_specs` has read them: the state holds plain arrays.
    variables = nn.meta.unbox(variables)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=state_rng,
        ema_params=ema_init(params) if ema else None,
    )


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
