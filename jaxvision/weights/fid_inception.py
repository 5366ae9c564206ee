"""pytorch-fid's Inception weights <-> jaxvision.models.fid_inception variables.

The file is a safetensors of pytorch-fid's `pt_inception-2015-12-05` state dict, converted once
where the .pth is trusted:

    import torch, safetensors.torch
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth")
    safetensors.torch.save_file(sd, "pt_inception-2015-12-05.safetensors")

Its names are torchvision's Inception-v3 names (`Mixed_6b.branch7x7_2.conv.weight`), which map
by the torchvision converter's rule; the 1,008-class `fc` (and any `AuxLogits`) is left out.
The state dict of pytorch-fid's `InceptionV3` wrapper (`blocks.3.1.branch_pool.conv.weight`,
the pool3 blocks in order) is read as well.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxvision.models.fid_inception import FIDInceptionV3
from jaxvision.weights import torchvision
from jaxvision.weights.common import check_complete, flatten, load_safetensors, unflatten

# pytorch-fid's InceptionV3.blocks[i][j] (max pools and the final pool hold no weights).
_WRAPPER_BLOCKS = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
    ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    (
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
    ),
    ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
)
_WRAPPER_NAME = re.compile(r"^blocks\.(\d+)\.(\d+)\.")
_UNUSED = ("fc.", "AuxLogits.")


def _torchvision_name(name: str) -> str:
    match = _WRAPPER_NAME.match(name)
    if match is None:
        return name
    block, index = int(match.group(1)), int(match.group(2))
    return f"{_WRAPPER_BLOCKS[block][index]}.{name[match.end() :]}"


def to_flax(tensors: dict[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """pytorch-fid state dict {torch name: array} → flat {("params"|"batch_stats", ...): array}
    (the classifier and aux head dropped)."""
    renamed = {_torchvision_name(k): v for k, v in tensors.items()}
    kept = {k: v for k, v in renamed.items() if not k.startswith(_UNUSED)}
    return torchvision.to_flax("inception_v3", kept)


def to_torch(variables: dict) -> dict[str, np.ndarray]:
    """FIDInceptionV3 variables → torch state dict (torchvision names, no `fc`)."""
    return torchvision.to_torch("inception_v3", flatten(variables))


def import_fid_inception(tensors: dict[str, np.ndarray], model: FIDInceptionV3 | None = None):
    """Variables of `model` (default FIDInceptionV3()) from pytorch-fid's tensors; a UserError
    names what is missing or misshapen when the file is for another network."""
    model = FIDInceptionV3() if model is None else model
    # Shapes only (check_complete reads `.shape`): no 22M-parameter init.
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
    expected = traverse_util.flatten_dict(dict(shapes))
    converted = to_flax(tensors)
    check_complete(converted, expected, "the FID Inception weights")
    return unflatten({k: np.asarray(v, np.float32) for k, v in converted.items()})


def load_fid_inception(path: str, model: FIDInceptionV3 | None = None) -> dict:
    """Reads pytorch-fid's weights from a .safetensors file (never a pickle) → variables."""
    return import_fid_inception(load_safetensors(path), model)
