"""What every weight converter needs: safe file I/O and PyTorch <-> Flax layouts.

Only safetensors (and numpy .npz for big_vision) are read: both are plain tensors, so a
weight file cannot run code when loaded. Pickled PyTorch files (.pt, .pth, .bin) are refused.
"""

import os

import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxvision.errors import UserError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt")


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a safetensors file into `{torch name: numpy array}`; never unpickles anything."""
    from safetensors.numpy import load_file

    if path.endswith(PICKLE_SUFFIXES):
        raise UserError(
            f"{path} is a pickled PyTorch file, which can run code when loaded: convert it once, "
            "where you trust it, with `safetensors.torch.save_file(torch.load(f), 'w.safetensors')`"
        )
    if not os.path.isfile(path):
        raise UserError(f"weight file {path} not found: give the path of a .safetensors file")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise UserError(f"cannot read {path} as safetensors ({e}): is the file complete?") from None


def save_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)


def conv_to_flax(kernel: np.ndarray) -> np.ndarray:
    """torch conv weight [O, I, kH, kW] -> flax kernel [kH, kW, I, O]."""
    return np.transpose(kernel, (2, 3, 1, 0))


def conv_to_torch(kernel: np.ndarray) -> np.ndarray:
    """flax kernel [kH, kW, I, O] -> torch conv weight [O, I, kH, kW]."""
    return np.transpose(kernel, (3, 2, 0, 1))


def dense_to_flax(weight: np.ndarray) -> np.ndarray:
    """torch linear weight [out, in] -> flax kernel [in, out]."""
    return np.transpose(weight)


def dense_to_torch(kernel: np.ndarray) -> np.ndarray:
    return np.transpose(kernel)


def param_to_torch(module: str, leaf: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """One Flax parameter → its torch state-dict entry: a bias as it is, a norm's scale as the
    module's weight, conv and dense kernels transposed to torch's layout."""
    if leaf == "bias":
        return f"{module}.bias", value
    if leaf == "scale":
        return f"{module}.weight", value
    if value.ndim == 4:
        return f"{module}.weight", conv_to_torch(value)
    return f"{module}.weight", dense_to_torch(value)


def flatten(variables: dict) -> dict[tuple[str, ...], np.ndarray]:
    """{"params": {"conv1": {"kernel": x}}} -> {("params", "conv1", "kernel"): x} (numpy).

    Logical-axis boxes (a fresh `model.init` of an annotated model) are unboxed first."""
    variables = nn.meta.unbox(variables)
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables).items()}


def unflatten(flat: dict[tuple[str, ...], np.ndarray]) -> dict:
    return traverse_util.unflatten_dict(flat)


def _check_values(key: tuple[str, ...], value, dtype, source: str) -> None:
    """Floats where the model has floats (any width: float16 and bfloat16 are upcast), and
    finite ones: integers would be cast to whole numbers (most weights to 0) without a word."""
    if not jnp.issubdtype(dtype, jnp.floating):
        return
    name = "/".join(key)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise UserError(
            f"{source}: {name} is stored as {np.dtype(value.dtype).name}, the model expects "
            f"floating-point values ({np.dtype(dtype).name}): write the file with float weights"
        )
    finite = np.isfinite(np.asarray(value, np.float32))
    if not finite.all():
        raise UserError(
            f"{source}: {name} holds {finite.size - int(finite.sum())} NaN or infinite values: "
            "the file is damaged or was saved from a run that diverged"
        )


def check_complete(converted: dict, expected: dict, source: str) -> None:
    """Raises UserError unless flat dict `converted` has exactly `expected`'s paths and shapes,
    with floating-point, finite values where the model has floats."""
    missing = sorted("/".join(k) for k in set(expected) - set(converted))
    extra = sorted("/".join(k) for k in set(converted) - set(expected))
    if missing or extra:
        raise UserError(
            f"{source} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}; "
            "check that the file is for this architecture"
        )
    for key, value in converted.items():
        _check_values(key, value, expected[key].dtype, source)
        if tuple(value.shape) != tuple(expected[key].shape):
            raise UserError(
                f"{source}: {'/'.join(key)} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)}; check the architecture and num_classes"
            )
