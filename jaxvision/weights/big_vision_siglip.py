"""big_vision two-tower (SigLIP) .npz checkpoints -> jaxvision.models.image_text.

The .npz holds flax parameters under "/"-joined paths (big_vision's `tree_flatten_with_names`),
optionally under `params/` or `opt/target/`: the image tower `img/` (big_vision's ViT:
`embedding`, `pos_embedding`, `Transformer/encoderblock_N/...`, `Transformer/encoder_norm`,
the MAP head `MAPHead_0/...`), the text tower `txt/` (`Embed_0`, `pos_embedding`,
`Encoder_0/encoderblock_N/...`, `Encoder_0/encoder_norm`, `head`), the log temperature `t` and
the bias `b`. Kernels are flax's already (attention [D, heads, D/heads]): only names change.
Scanned encoders (`encoderblock` with a leading depth axis) are split into blocks first.
"""

import re

import numpy as np

from jaxvision.errors import UserError

TITLE = "big_vision"
_PREFIXES = ("opt/target/", "params/")


def _block_rules(source: str, target: str) -> list[tuple[str, str, str]]:
    """One encoder's blocks: `source` the encoder's prefix, `target` ours."""
    block = rf"{source}/encoderblock_(\d+)"
    return [
        (rf"{block}/LayerNorm_0/(scale|bias)", rf"{target}/blocks_\1/norm1/\2", "raw"),
        (rf"{block}/LayerNorm_1/(scale|bias)", rf"{target}/blocks_\1/norm2/\2", "raw"),
        (
            rf"{block}/MultiHeadDotProductAttention_0/(query|key|value|out)/(kernel|bias)",
            rf"{target}/blocks_\1/attn/\2/\3",
            "raw",
        ),
        (rf"{block}/MlpBlock_0/Dense_0/(kernel|bias)", rf"{target}/blocks_\1/mlp/fc1/\2", "raw"),
        (rf"{block}/MlpBlock_0/Dense_1/(kernel|bias)", rf"{target}/blocks_\1/mlp/fc2/\2", "raw"),
        (rf"{source}/encoder_norm/(scale|bias)", rf"{target}/norm/\1", "raw"),
    ]


RULES = [
    (r"img/embedding/(kernel|bias)", r"img/patch_embed/proj/\1", "raw"),
    (r"img/pos_embedding", "img/pos_embed", "raw"),
    *_block_rules("img/Transformer", "img"),
    (r"img/MAPHead_0/probe", "img/attn_pool/probe", "raw"),
    (
        r"img/MAPHead_0/MultiHeadDotProductAttention_0/(query|key|value|out)/(kernel|bias)",
        r"img/attn_pool/attn/\1/\2",
        "raw",
    ),
    (r"img/MAPHead_0/LayerNorm_0/(scale|bias)", r"img/attn_pool/norm/\1", "raw"),
    (r"img/MAPHead_0/MlpBlock_0/Dense_0/(kernel|bias)", r"img/attn_pool/mlp/fc1/\1", "raw"),
    (r"img/MAPHead_0/MlpBlock_0/Dense_1/(kernel|bias)", r"img/attn_pool/mlp/fc2/\1", "raw"),
    (r"txt/Embed_0/embedding", "txt/token_embed/embedding", "raw"),
    (r"txt/pos_embedding", "txt/pos_embed", "raw"),
    *_block_rules("txt/Encoder_0", "txt"),
    (r"txt/head/(kernel|bias)", r"txt/proj/\1", "raw"),
    (r"t", "t", "raw"),
    (r"b", "b", "raw"),
]


def recognizes(names: list[str]) -> bool:
    return any(n.startswith("img/") for n in names) and any(n.startswith("txt/") for n in names)


def _unscan(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`.../encoderblock/X` [depth, ...] (a scanned encoder) -> `.../encoderblock_N/X`."""
    out = {}
    for name, value in arrays.items():
        match = re.fullmatch(r"(.*/encoderblock)/(.*)", name)
        if not match:
            out[name] = value
            continue
        for i, part in enumerate(value):
            out[f"{match[1]}_{i}/{match[2]}"] = part
    return out


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The .npz's arrays by name, prefix dropped and scanned encoders split."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz)
    except FileNotFoundError:
        raise UserError(f"weight file {path} not found: give the path of a .npz file") from None
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read {path} as a numpy .npz ({e}): is the file complete?"
        ) from None
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in arrays):
            arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            break
    return _unscan(arrays)
