"""Pretrained weights in and out: torchvision/timm/Ultralytics safetensors, big_vision .npz
files, open_clip / Hugging Face CLIP and SigLIP safetensors (jaxvision.weights.image_text), by
path or by name from the Hugging Face hub (`hf-hub:ORG/NAME[@REVISION]`,
jaxvision.weights.hub).

Each model family has a converter module with these functions:

  to_flax(model_name, tensors) -> {("params"|"batch_stats", ...path): array}   (flat)
  to_torch(model_name, flat) -> {torch name: array}
  adapt(model_name, converted, expected) -> converted    optional: fit shapes (ViT posemb)
  load_npz(model_name, path) -> {torch name: array}      optional: big_vision .npz files
  import_weights(model_name, tensors, variables, new_head) -> (variables, kept paths)
      optional: replaces the generic import (detectors also read classification backbones)

and one entry per model in `CONVERTERS` (model name -> its converter module, imported on first
use; a model defined elsewhere registers its own: `CONVERTERS.register("my_net", module)`).
`import_weights` turns a file's tensors into variables shaped like a freshly initialised
model's, keeping the fresh classifier when the number of classes differs (fine-tuning with a
new head): the classifier is the module the model names (`models.classifier`).
"""

import numpy as np

from jaxvision import models
from jaxvision.errors import UserError
from jaxvision.models import image_text
from jaxvision.registry import Registry
from jaxvision.weights import hub
from jaxvision.weights.common import (
    check_complete,
    flatten,
    load_safetensors,
    save_safetensors,
    unflatten,
)

# model name -> converter module (under jaxvision.weights), imported on first use.
_TORCHVISION = (
    "resnet18 resnet34 resnet50 resnet101 resnet152 vgg16 vgg19 vgg16_bn vgg19_bn "
    "googlenet inception_v3 densenet121 densenet169"
)
_TIMM = (
    "vit_ti16 vit_s16 vit_s4 vit_b16 vit_b32 vit_l16 vit_h14 vit_g14 vit_bigg14 vit_b16_r50 "
    "mixer_b16"
)
_TORCHVISION_DETECTION = (
    "fasterrcnn_resnet18_fpn_small fasterrcnn_resnet50_fpn "
    "fcos_resnet18_fpn_small fcos_resnet50_fpn "
    "retinanet_resnet18_fpn retinanet_resnet18_fpn_small retinanet_resnet34_fpn "
    "retinanet_resnet50_fpn ssd128_vgg16_small ssd300_vgg16"
)
_ULTRALYTICS = " ".join(f"{v}{s}" for v in ("yolov8", "yolo11", "yolo26") for s in "nsmlx")
CONVERTERS = Registry("weight converter")
for _module, _names in (
    ("torchvision", _TORCHVISION),
    ("timm", _TIMM),
    ("torchvision_detection", _TORCHVISION_DETECTION),
    ("ultralytics", _ULTRALYTICS),
):
    for _name in _names.split():
        CONVERTERS.declare(_name, f"jaxvision.weights.{_module}")
# Two-tower models read big_vision, open_clip and Hugging Face layouts (told apart by names).
for _name in image_text.names():
    CONVERTERS.declare(_name, "jaxvision.weights.image_text")


def _converter(model_name: str):
    if model_name not in CONVERTERS:
        raise CONVERTERS.unknown(
            model_name, f"no weight converter for model '{model_name}'", "importable models are"
        )
    return CONVERTERS[model_name]


def importable_models() -> list[str]:
    """The models whose weights import from torchvision / timm / Ultralytics / big_vision /
    open_clip / Hugging Face files."""
    return sorted(CONVERTERS)


def import_weights(
    model_name: str, tensors: dict[str, np.ndarray], variables: dict, *, new_head: bool = False
) -> tuple[dict, list[str]]:
    """Maps torch-named `tensors` onto `variables` (a fresh init of the model, for structure).

    Returns (variables with the imported values, the paths kept from `variables`: the classifier
    when `new_head` or when its shape differs from the file's).
    """
    converter = _converter(model_name)
    if hasattr(converter, "import_weights"):  # detectors: also classification backbone files
        return converter.import_weights(model_name, tensors, variables, new_head=new_head)
    converted = converter.to_flax(model_name, tensors)
    expected = flatten(variables)
    if hasattr(converter, "adapt"):  # e.g. resample ViT position embeddings to a new resolution
        converted = converter.adapt(model_name, converted, expected)
    head = ("params", models.classifier(model_name))
    kept = []
    for key in expected:
        if key[: len(head)] != head:
            continue
        if new_head or key not in converted or converted[key].shape != expected[key].shape:
            converted[key] = expected[key]
            kept.append("/".join(key))
    check_complete(converted, expected, f"weights for {model_name}")
    dtypes = {k: v.dtype for k, v in expected.items()}
    return unflatten({k: v.astype(dtypes[k]) for k, v in converted.items()}), sorted(kept)


def merge_variables(
    loaded: dict, fresh: dict, *, head, new_head: bool = False
) -> tuple[dict, list[str]]:
    """Variables of the same architecture (e.g. another jaxvision run's checkpoint) onto `fresh`.

    Leaves under `head` (a path prefix such as ("params", "fc"), or a list of them: a
    detector's class outputs) stay fresh when their shapes differ or with `new_head`; any other
    difference is an error. Returns (variables, kept paths).
    """
    heads = [] if head is None else [head] if isinstance(head[0], str) else list(head)
    flat_loaded, expected = flatten(loaded), flatten(fresh)
    kept = []
    for key, value in expected.items():
        under_head = any(key[: len(h)] == tuple(h) for h in heads)
        if under_head and (
            new_head or key not in flat_loaded or flat_loaded[key].shape != value.shape
        ):
            flat_loaded[key] = value
            kept.append("/".join(key))
    flat_loaded = {k: v for k, v in flat_loaded.items() if k in expected or k[0] != "batch_stats"}
    check_complete(flat_loaded, expected, "the checkpoint")
    dtypes = {k: v.dtype for k, v in expected.items()}
    return unflatten({k: np.asarray(v).astype(dtypes[k]) for k, v in flat_loaded.items()}), kept


def export_weights(model_name: str, variables: dict) -> dict[str, np.ndarray]:
    """The model's variables under the reference implementation's (torch) names and layouts."""
    return _converter(model_name).to_torch(model_name, flatten(variables))


def read_tensors(path: str, model_name: str) -> dict[str, np.ndarray]:
    """The torch-named tensors of `path`: a .safetensors file, a big_vision .npz (ViT/Mixer:
    timm-named; image-text models: big_vision's own names), or
    `hf-hub:ORG/NAME[@REVISION]` (its weight file, fetched into the hub cache; an error when the
    repository's architecture is another zoo model's)."""
    if hub.is_hub_name(path):
        found = hub.fetch(path)
        if not hasattr(_converter(model_name), "import_weights"):  # detectors: backbones too
            hub.check_model(found, model_name)
        path = found.path
    if path.endswith(".npz"):
        converter = _converter(model_name)
        if not hasattr(converter, "load_npz"):
            raise UserError(
                f"{path} is a big_vision .npz, which only ViT, Mixer and image-text models read; "
                f"{model_name} takes a torchvision .safetensors file"
            )
        return converter.load_npz(model_name, path)
    return load_safetensors(path)


def load_weights(path: str, model_name: str, variables: dict, *, new_head: bool = False):
    """Reads `path` (.safetensors with torch names, a big_vision .npz for ViTs and SigLIP, or a
    hub name `hf-hub:ORG/NAME[@REVISION]`) and imports it as `import_weights` does."""
    tensors = read_tensors(path, model_name)
    return import_weights(model_name, tensors, variables, new_head=new_head)


__all__ = [
    "export_weights",
    "hub",
    "import_weights",
    "importable_models",
    "load_safetensors",
    "load_weights",
    "merge_variables",
    "read_tensors",
    "save_safetensors",
]
