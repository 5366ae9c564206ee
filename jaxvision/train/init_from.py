"""Starting a run from trained weights instead of a random init (`config.init_from`)."""

import os

import jax

from jaxvision import models, weights
from jaxvision.checkpoint import load_variables
from jaxvision.train import reporting


def init_state_from(path: str, model_name: str, state, state_sharding, *, new_head: bool):
    """`state` with its parameters (and BatchNorm statistics) replaced by those of a weight file
    (torchvision/timm .safetensors, big_vision .npz) or of another run's checkpoint (its
    workdir), placed with `state_sharding`. The classifier stays fresh when the number of
    classes differs, or always with `new_head` (fine-tuning with a new head)."""
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    if not fresh["batch_stats"]:
        del fresh["batch_stats"]
    if os.path.isdir(path):
        variables, step = load_variables(path)
        path = f"{path} (step {step})"
        loaded, kept = weights.merge_variables(
            variables, fresh, head=("params", models.classifier(model_name)), new_head=new_head
        )
    else:
        loaded, kept = weights.load_weights(path, model_name, fresh, new_head=new_head)
    state = state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", {}))
    kept_note = f" (classifier kept fresh: {', '.join(kept)})" if kept else ""
    reporting.note(f"initialised {model_name} from {path}{kept_note}")
    return jax.device_put(state, state_sharding)
