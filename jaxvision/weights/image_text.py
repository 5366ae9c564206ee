"""Image-text (SigLIP / CLIP) weights from other codebases -> jaxvision.models.image_text.

The weight converter of every two-tower model (`siglip_*`, `clip_*`). A file is read in the
layout its tensor names show, one of `LAYOUTS` (each a module with `TITLE`, `recognizes(names)`
and `RULES`; a new layout is a module and a `LAYOUTS.declare`):

  big_vision     big_vision two-tower .npz (`img/...`, `txt/...`, `t`, `b`), SigLIP's release
                 (jaxvision.weights.big_vision_siglip)
  open_clip      open_clip CLIP state dicts (`visual.*`, `transformer.*`, `logit_scale`)
                 (jaxvision.weights.open_clip)
  hugging_face   transformers' CLIPModel / SiglipModel (`vision_model.*`, `text_model.*`)
                 (jaxvision.weights.hf_image_text)

A rule is (regular expression over a file name, our parameter path (`\\1` for groups), kind);
the kind says how the tensor's layout changes (`KINDS`). The last group of a torch rule is the
tensor's leaf (`weight` / `bias`). Attention kernels come out with their heads fused and are
split to the model's [D, heads, D/heads] when fitted; a position embedding for another image
size is resampled (bicubic); anything else that does not fit is a one-line UserError naming the
file's first tensor that does not.
"""

import math
import re
from collections.abc import Callable

import numpy as np

from jaxvision.errors import UserError
from jaxvision.registry import Registry
from jaxvision.weights.big_vision_siglip import read_npz
from jaxvision.weights.common import check_complete, conv_to_flax, flatten, unflatten
from jaxvision.weights.timm import resample_posemb

LAYOUTS = Registry("image-text weight layout")
LAYOUTS.declare("big_vision", "jaxvision.weights.big_vision_siglip")
LAYOUTS.declare("open_clip", "jaxvision.weights.open_clip")
LAYOUTS.declare("hugging_face", "jaxvision.weights.hf_image_text")

# Tensors that hold no weights (buffers some state dicts keep): skipped.
IGNORED = re.compile(r"(.*\.)?(position_ids|attn_mask)")

Path = tuple[str, ...]
Rule = tuple[str, str, str]
_QKV = ("query", "key", "value")


def _raw(path: Path, leaf: str, value: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    del leaf
    return [(path, value)]


def _linear(path: Path, leaf: str, value: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    return [(path + ("kernel",), value.T)] if leaf == "weight" else [(path + ("bias",), value)]


def _norm(path: Path, leaf: str, value: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    return [(path + ("scale" if leaf == "weight" else "bias",), value)]


def _conv(path: Path, leaf: str, value: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    if leaf == "weight":
        return [(path + ("kernel",), conv_to_flax(value))]
    return [(path + ("bias",), value)]


def _in_proj(path: Path, leaf: str, value: np.ndarray) -> list[tuple[Path, np.ndarray]]:
    """torch MultiheadAttention's fused `in_proj_weight` [3D, D] (rows q, k, v) / `_bias`."""
    parts = np.split(value, 3)
    if leaf == "weight":
        return [(path + (n, "kernel"), p.T) for n, p in zip(_QKV, parts, strict=True)]
    return [(path + (n, "bias"), p) for n, p in zip(_QKV, parts, strict=True)]


KINDS: dict[str, Callable] = {
    "raw": _raw,
    "linear": _linear,
    "norm": _norm,
    "conv": _conv,
    "in_proj": _in_proj,
}


def torch_block_rules(source: str, target: str, names: dict[str, str]) -> list[Rule]:
    """Rules for a torch transformer's blocks: `source` the block prefix with a `(\\d+)` group
    (escaped), `target` ours with `\\1`; `names`: {"norm1": the first norm's name, "norm2",
    "qkv" (fused in_proj) or "query"/"key"/"value", "out", "fc1", "fc2"}."""
    kinds = {"norm1": "norm", "norm2": "norm", "qkv": "in_proj"}
    paths = {"norm1": "norm1", "norm2": "norm2", "qkv": "attn", "fc1": "mlp/fc1", "fc2": "mlp/fc2"}
    paths |= {"query": "attn/query", "key": "attn/key", "value": "attn/value", "out": "attn/out"}
    rules = []
    for ours, theirs in names.items():
        leaf = r"_(weight|bias)" if ours == "qkv" else r"\.(weight|bias)"
        rules.append(
            (
                rf"{source}\.{re.escape(theirs)}{leaf}",
                f"{target}/{paths[ours]}",
                kinds.get(ours, "linear"),
            )
        )
    return rules


def convert(tensors: dict[str, np.ndarray], rules: list[Rule], title: str) -> dict:
    """{file name: array} -> {our flat key: (array, the file's name)} by `rules`."""
    out: dict[Path, tuple[np.ndarray, str]] = {}
    compiled = [(re.compile(p), t, KINDS[k]) for p, t, k in rules]
    for name, value in tensors.items():
        for pattern, target, kind in compiled:
            match = pattern.fullmatch(name)
            if match:
                path = ("params", *match.expand(target).split("/"))
                leaf = match.groups()[-1] if match.groups() else ""
                for key, array in kind(path, leaf, np.asarray(value)):
                    out[key] = (array, name)
                break
        else:
            if not IGNORED.fullmatch(name):
                raise UserError(
                    f"tensor {name!r} of the {title} file has no place in jaxvision's image-text "
                    "models (another architecture or an unsupported variant?)"
                )
    return out


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _fit(key: Path, value: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
    """`value` in the model's shape `want` where only the layout differs: heads split, leading
    unit axes (a [N, D] position embedding, a scalar logit scale), or a position embedding for
    another image size (resampled as timm does)."""
    if value.shape == want:
        return value
    if _squeezed(value.shape) == _squeezed(want) or (
        "attn" in key and value.size == math.prod(want)
    ):
        return value.reshape(want)
    if key[-2:] == ("img", "pos_embed") and value.shape[-1] == want[-1]:
        grid = value.reshape(1, -1, want[-1])
        num_prefix = int(math.isqrt(grid.shape[1]) ** 2 != grid.shape[1])
        return resample_posemb(grid, math.isqrt(want[1] - num_prefix), num_prefix)
    return value


def layout_of(names: list[str]):
    """The layout module whose `recognizes` accepts `names`; UserError when none does."""
    for layout_name in LAYOUTS:
        if LAYOUTS[layout_name].recognizes(names):
            return LAYOUTS[layout_name]
    shown = ", ".join(sorted(names)[:3])
    raise UserError(
        f"the weight file ({shown}, ...) is in none of the image-text layouts jaxvision reads "
        f"({', '.join(LAYOUTS[n].TITLE for n in LAYOUTS)}): give a big_vision .npz or an "
        "open_clip / Hugging Face .safetensors"
    )


def import_weights(
    model_name: str, tensors: dict[str, np.ndarray], variables: dict, *, new_head: bool = False
) -> tuple[dict, list[str]]:
    """A big_vision / open_clip / Hugging Face image-text state dict onto `variables` (a fresh
    init of `model_name`, for structure). Returns (variables, []): a two-tower model has no
    classifier, so `new_head` changes nothing. UserError naming the file's first tensor that
    does not fit (an unknown name, a shape, one the model lacks) or the model's first parameter
    the file does not hold."""
    del new_head
    layout = layout_of(list(tensors))
    converted = convert(tensors, layout.RULES, layout.TITLE)
    expected = flatten(variables)
    fitted = {}
    for key, (value, name) in converted.items():
        path = "/".join(key[1:])
        if key not in expected:
            raise UserError(
                f"tensor {name!r} of the {layout.TITLE} file has no place in {model_name} (it "
                f"would be {path}): is the file for another model, or does {model_name} need "
                "other options?"
            )
        want = tuple(expected[key].shape)
        value = _fit(key, value, want)
        if value.shape != want:
            raise UserError(
                f"tensor {name!r} of the {layout.TITLE} file has shape "
                f"{tuple(converted[key][0].shape)}, {model_name} expects {want} for {path}: "
                "pick the model size (or options) the file was trained with"
            )
        fitted[key] = value
    missing = sorted("/".join(k[1:]) for k in expected if k not in fitted)
    if missing:
        raise UserError(
            f"the {layout.TITLE} file has no weights for {model_name}'s {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": is it for another model?"
        )
    check_complete(fitted, expected, f"weights for {model_name}")
    dtypes = {k: v.dtype for k, v in expected.items()}
    return unflatten({k: v.astype(dtypes[k]) for k, v in fitted.items()}), []


def load_npz(model_name: str, path: str) -> dict[str, np.ndarray]:
    """A big_vision .npz as {"/"-joined flax path: array}, without a `params/` or
    `opt/target/` prefix (the two-tower layout reads it)."""
    del model_name
    return read_npz(path)


def to_flax(model_name: str, tensors: dict[str, np.ndarray]) -> dict[Path, np.ndarray]:
    """The file's tensors under our paths, heads still fused (shapes fit on import)."""
    del model_name
    layout = layout_of(list(tensors))
    return {k: v for k, (v, _) in convert(tensors, layout.RULES, layout.TITLE).items()}


def to_torch(model_name: str, flat: dict) -> dict[str, np.ndarray]:
    raise UserError(
        f"exporting {model_name} to a torch state dict is not supported: image-text weights "
        "import only"
    )
