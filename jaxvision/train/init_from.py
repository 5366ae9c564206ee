"""Starting a model from trained weights instead of a random init (`config.init_from`)."""

import os

import jax

from jaxvision import weights
from jaxvision.checkpoint import load_variables
from jaxvision.errors import listing
from jaxvision.train import reporting
from jaxvision.train.state import ModelState


def init_model_from(
    path: str,
    model_name: str,
    model: ModelState,
    sharding: ModelState,
    *,
    new_head: bool,
    heads: list[tuple[str, ...]],
) -> ModelState:
    """`model` with its parameters (and BatchNorm statistics) replaced by those of a weight file
    (torchvision/timm .safetensors, big_vision .npz, or one on the Hugging Face hub by name:
    `hf-hub:ORG/NAME[@REVISION]`) or of another run's checkpoint (its workdir), placed with
    `sharding`. The classifier (`heads`: variable path prefixes, the task's `head_paths`) stays
    fresh when the number of classes differs, or always with `new_head` (fine-tuning with a new
    head)."""
    fresh = jax.device_get(model.variables)
    if os.path.isdir(path):
        variables, step = load_variables(path)
        path = f"{path} (step {step})"
        loaded, kept = weights.merge_variables(variables, fresh, head=heads, new_head=new_head)
    else:
        loaded, kept = weights.load_weights(path, model_name, fresh, new_head=new_head)
    model = model.replace(variables={**model.variables, **loaded})
    reporting.note(f"initialised {model_name} from {path}{_kept_note(kept, heads)}")
    return jax.device_put(model, sharding)


def _kept_note(kept: list[str], heads: list[tuple[str, ...]]) -> str:
    """What stayed fresh: the classifier, or (a classification backbone in a detector) the
    modules the file has no weights for, by module."""
    if not kept:
        return ""
    paths = [tuple(k.split("/")) for k in kept]
    if all(any(p[: len(h)] == tuple(h) for h in heads) for p in paths):
        return f" (classifier kept fresh: {listing(kept)})"
    modules = sorted({"/".join(p[1:3]) for p in paths})
    return f" (kept fresh, not in the file: {listing(modules, limit=8)})"
