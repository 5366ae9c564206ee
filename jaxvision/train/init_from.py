"""Starting a model from trained weights instead of a random init (`config.init_from`)."""

import os

import jax

from jaxvision import models, weights
from jaxvision.checkpoint import load_variables
from jaxvision.train import reporting
from jaxvision.train.state import ModelState


def init_model_from(
    path: str, model_name: str, model: ModelState, sharding: ModelState, *, new_head: bool
) -> ModelState:
    """`model` with its parameters (and BatchNorm statistics) replaced by those of a weight file
    (torchvision/timm .safetensors, big_vision .npz) or of another run's checkpoint (its
    workdir), placed with `sharding`. The classifier stays fresh when the number of classes
    differs, or always with `new_head` (fine-tuning with a new head)."""
    fresh = jax.device_get(model.variables)
    if os.path.isdir(path):
        variables, step = load_variables(path)
        path = f"{path} (step {step})"
        loaded, kept = weights.merge_variables(
            variables, fresh, head=("params", models.classifier(model_name)), new_head=new_head
        )
    else:
        loaded, kept = weights.load_weights(path, model_name, fresh, new_head=new_head)
    model = model.replace(variables={**model.variables, **loaded})
    kept_note = f" (classifier kept fresh: {', '.join(kept)})" if kept else ""
    reporting.note(f"initialised {model_name} from {path}{kept_note}")
    return jax.device_put(model, sharding)
