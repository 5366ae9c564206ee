"""Training wrappers that packages outside `train/` provide, keyed by the config field that asks
for them: a model wrapper (quantization-aware training: `quantize_training`) turns the built
model into the one trained, an optimizer wrapper (pruning masks: `prune_masks`) turns the built
optimizer into the one applied.

The compression package registers its wrappers when its training module is imported; a program
imports it when its config sets one of those fields. `train/` never imports the packages that
fill these tables.
"""

from collections.abc import Callable
from typing import Any

import optax
from flax import linen as nn

ModelWrapper = Callable[[nn.Module, Any], nn.Module]
OptimizerWrapper = Callable[[optax.GradientTransformation, Any], optax.GradientTransformation]

# config field -> wrapper(thing, the field's value)
MODEL_WRAPPERS: dict[str, ModelWrapper] = {}
OPTIMIZER_WRAPPERS: dict[str, OptimizerWrapper] = {}


def register_model_wrapper(field: str) -> Callable[[ModelWrapper], ModelWrapper]:
    """Decorator: `wrapper(model, value) -> model`, applied when the config sets `field`."""

    def register(wrapper: ModelWrapper) -> ModelWrapper:
        MODEL_WRAPPERS[field] = wrapper
        return wrapper

    return register


def register_optimizer_wrapper(field: str) -> Callable[[OptimizerWrapper], OptimizerWrapper]:
    """Decorator: `wrapper(tx, value) -> tx`, applied when the config sets `field`."""

    def register(wrapper: OptimizerWrapper) -> OptimizerWrapper:
        OPTIMIZER_WRAPPERS[field] = wrapper
        return wrapper

    return register


def requested(config, table: dict) -> tuple[tuple[str, Any], ...]:
    """(field, value) for each wrapper of `table` (MODEL_WRAPPERS or OPTIMIZER_WRAPPERS) that
    `config` sets to a non-empty value, in registration order."""
    return tuple((field, config.get(field)) for field in table if config.get(field))


def wrap_model(model: nn.Module, requests: tuple[tuple[str, Any], ...]) -> nn.Module:
    """`model` through each requested model wrapper (`requested(config, MODEL_WRAPPERS)`)."""
    for field, value in requests:
        model = MODEL_WRAPPERS[field](model, value)
    return model


def wrap_optimizer(
    tx: optax.GradientTransformation, requests: tuple[tuple[str, Any], ...]
) -> optax.GradientTransformation:
    """`tx` through each requested optimizer wrapper (`requested(config, OPTIMIZER_WRAPPERS)`)."""
    for field, value in requests:
        tx = OPTIMIZER_WRAPPERS[field](tx, value)
    return tx
