"""The state a step maps to the next one and a task reads: pytrees of arrays, nothing else.

A run trains one or several named models ("model"; "student" beside a frozen "teacher";
"generator" and "discriminator"). Each model carries its variables by collection, its own
optimizer state, step, random key and, optionally, an average of its weights. Inference holds
the same `ModelState` (without an optimizer) for its task's `predict`.
"""

from typing import Any

import flax
import jax


@flax.struct.dataclass
class ModelState:
    """One model of a run.

    variables: its collections: {"params": ..., "batch_stats": ... (BatchNorm), ...}.
    opt_state: the optax state for `variables["params"]`; None for a frozen model (a teacher).
    step: int32 scalar, the optimizer updates applied to this model.
    rng: uint32 [2] raw PRNG key; a step folds in the run's step, so no two steps share
        randomness.
    ema_params: exponential moving average of the parameters (None when none is kept).
    """

    variables: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array
    ema_params: Any = None

    @property
    def params(self):
        return self.variables["params"]

    @property
    def mutable(self) -> dict:
        """The collections a training forward updates (all but `params`)."""
        return {k: v for k, v in self.variables.items() if k != "params"}

    def with_ema_weights(self) -> "ModelState":
        """This model with its EMA parameters in place of the trained ones."""
        return self.replace(variables={**self.variables, "params": self.ema_params})


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    step: int32 scalar, the number of train steps run so far (also the data position).
    models: {name: ModelState}.
    """

    step: jax.Array
    models: dict[str, ModelState]

    def replace_model(self, name: str, **fields) -> "TrainState":
        return self.replace(models={**self.models, name: self.models[name].replace(**fields)})
