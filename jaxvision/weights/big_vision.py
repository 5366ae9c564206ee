"""big_vision / google-research `vision_transformer` .npz checkpoints -> timm state dicts.

The .npz holds flax parameters under "/"-joined paths. Three layouts are read, as timm's own
`_load_weights` does:

- google-research ViT: `Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel`,
  `LayerNorm_0`/`LayerNorm_2`, `MlpBlock_3`, `Transformer/posembed_input/pos_embedding` (which
  includes the class token's position);
- big_vision ViT: `MultiHeadDotProductAttention_0`, `LayerNorm_0`/`LayerNorm_1`, `MlpBlock_0`,
  a top-level `pos_embedding` of the patches only, optionally scanned (`Transformer/encoderblock`
  with a leading depth axis); optional `params/` or `opt/target/` prefix;
- the R50+ViT hybrid's ResNet (`conv_root`, `gn_root`, `block1/unit1/conv1`, `gn_proj`, ...) and
  google-research MLP-Mixer (`stem`, `MixerBlock_0/token_mixing/Dense_0`, `pre_head_layer_norm`).

The result is timm-named, torch-layout arrays, which `jaxvision.weights.timm.to_flax` imports.
Note: these models were trained with tanh-approximated GELU; jaxvision (like timm) uses the exact
one, which moves logits slightly.
"""

import math
import re

import numpy as np

from jaxvision.errors import UserError

_PREFIXES = ("opt/target/", "params/")


def _conv(kernel: np.ndarray) -> np.ndarray:
    """flax [kH, kW, I, O] -> torch [O, I, kH, kW]."""
    return np.transpose(kernel, (3, 2, 0, 1))


def _dense(kernel: np.ndarray) -> np.ndarray:
    return np.transpose(kernel)


def _vector(x: np.ndarray) -> np.ndarray:
    # GroupNorm scales are sometimes stored as [1, 1, 1, C].
    return x.reshape(-1)


def to_timm(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`{"/"-joined flax path: array}` -> `{timm name: torch-layout array}`.

    Raises UserError for keys no layout above explains (e.g. a MAP head or a pre-logits layer),
    rather than silently dropping part of a model.
    """
    w = dict(arrays)
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in w):
            w = {k[len(prefix) :]: v for k, v in w.items() if k.startswith(prefix)}
            break
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return np.asarray(w[key])

    if "stem/kernel" in w:
        _mixer(w, take, out)
    elif "embedding/kernel" in w:
        _vit(w, take, out)
    else:
        raise UserError(
            "not a ViT or Mixer checkpoint: no 'embedding/kernel' or 'stem/kernel' in the .npz"
        )
    if "head/kernel" in w:
        out["head.weight"] = _dense(take("head/kernel"))
        out["head.bias"] = take("head/bias")
    unused = sorted(set(w) - used)
    if unused:
        raise UserError(f"the .npz has parameters jaxvision's ViT/Mixer lack: {unused[:5]}")
    return out


def _vit(w, take, out) -> None:
    if "conv_root/kernel" in w:
        _resnet(w, take, out)
    out["patch_embed.proj.weight"] = _conv(take("embedding/kernel"))
    out["patch_embed.proj.bias"] = take("embedding/bias")
    if "cls" in w:
        out["cls_token"] = take("cls")
    for key in ("Transformer/posembed_input/pos_embedding", "pos_embedding"):
        if key in w:
            pos = take(key)
            pos = pos.reshape(1, -1, pos.shape[-1])
            if "cls" in w and math.isqrt(pos.shape[1]) ** 2 == pos.shape[1]:
                # big_vision adds positions to the patches only, then the class token; timm adds
                # them after. A zero row for the class token gives exactly big_vision's sum.
                pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
            out["pos_embed"] = pos
    out["norm.weight"] = take("Transformer/encoder_norm/scale")
    out["norm.bias"] = take("Transformer/encoder_norm/bias")

    if "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in w:
        mha, mlp, ln2 = "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2"
    else:
        mha, mlp, ln2 = "MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1"
    scanned = "Transformer/encoderblock/LayerNorm_0/scale" in w
    if scanned:
        depth = w["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
    else:
        depth = sum(
            bool(re.fullmatch(r"Transformer/encoderblock_\d+/LayerNorm_0/scale", k)) for k in w
        )
    for i in range(depth):
        src = "Transformer/encoderblock/" if scanned else f"Transformer/encoderblock_{i}/"

        def get(name, src=src, i=i):
            x = take(src + name)
            return x[i] if scanned else x

        dst = f"blocks.{i}."
        for flax_name, timm_name in (("LayerNorm_0", "norm1"), (ln2, "norm2")):
            out[f"{dst}{timm_name}.weight"] = get(f"{flax_name}/scale")
            out[f"{dst}{timm_name}.bias"] = get(f"{flax_name}/bias")
        # query/key/value kernels [D, H, Dh] -> one [3D, D] torch weight; out [H, Dh, D] -> [D, D].
        qkv = [get(f"{mha}/{n}/kernel") for n in ("query", "key", "value")]
        out[f"{dst}attn.qkv.weight"] = np.concatenate(
            [_dense(k.reshape(k.shape[0], -1)) for k in qkv]
        )
        qkv_bias = [get(f"{mha}/{n}/bias").reshape(-1) for n in ("query", "key", "value")]
        out[f"{dst}attn.qkv.bias"] = np.concatenate(qkv_bias)
        proj = get(f"{mha}/out/kernel")
        out[f"{dst}attn.proj.weight"] = _dense(proj.reshape(-1, proj.shape[-1]))
        out[f"{dst}attn.proj.bias"] = get(f"{mha}/out/bias")
        for r in range(2):
            out[f"{dst}mlp.fc{r + 1}.weight"] = _dense(get(f"{mlp}/Dense_{r}/kernel"))
            out[f"{dst}mlp.fc{r + 1}.bias"] = get(f"{mlp}/Dense_{r}/bias")


def _resnet(w, take, out) -> None:
    """The hybrid's ResNetV2 (`conv_root`, `blockI/unitJ/...`) -> `patch_embed.backbone.*`."""
    dst = "patch_embed.backbone."
    out[f"{dst}stem.conv.weight"] = _conv(take("conv_root/kernel"))
    out[f"{dst}stem.norm.weight"] = _vector(take("gn_root/scale"))
    out[f"{dst}stem.norm.bias"] = _vector(take("gn_root/bias"))
    units = sorted(
        {tuple(map(int, m.groups())) for k in w if (m := re.match(r"block(\d+)/unit(\d+)/", k))}
    )
    for stage, unit in units:
        src = f"block{stage}/unit{unit}/"
        block = f"{dst}stages.{stage - 1}.blocks.{unit - 1}."
        for r in (1, 2, 3):
            out[f"{block}conv{r}.weight"] = _conv(take(f"{src}conv{r}/kernel"))
            out[f"{block}norm{r}.weight"] = _vector(take(f"{src}gn{r}/scale"))
            out[f"{block}norm{r}.bias"] = _vector(take(f"{src}gn{r}/bias"))
        if f"{src}conv_proj/kernel" in w:
            out[f"{block}downsample.conv.weight"] = _conv(take(f"{src}conv_proj/kernel"))
            out[f"{block}downsample.norm.weight"] = _vector(take(f"{src}gn_proj/scale"))
            out[f"{block}downsample.norm.bias"] = _vector(take(f"{src}gn_proj/bias"))


def _mixer(w, take, out) -> None:
    out["stem.proj.weight"] = _conv(take("stem/kernel"))
    out["stem.proj.bias"] = take("stem/bias")
    depth = sum(bool(re.fullmatch(r"MixerBlock_\d+/LayerNorm_0/scale", k)) for k in w)
    for i in range(depth):
        src, dst = f"MixerBlock_{i}/", f"blocks.{i}."
        for r, name in ((0, "norm1"), (1, "norm2")):
            out[f"{dst}{name}.weight"] = take(f"{src}LayerNorm_{r}/scale")
            out[f"{dst}{name}.bias"] = take(f"{src}LayerNorm_{r}/bias")
        for flax_name, timm_name in (
            ("token_mixing", "mlp_tokens"),
            ("channel_mixing", "mlp_channels"),
        ):
            for r in range(2):
                out[f"{dst}{timm_name}.fc{r + 1}.weight"] = _dense(
                    take(f"{src}{flax_name}/Dense_{r}/kernel")
                )
                out[f"{dst}{timm_name}.fc{r + 1}.bias"] = take(f"{src}{flax_name}/Dense_{r}/bias")
    out["norm.weight"] = take("pre_head_layer_norm/scale")
    out["norm.bias"] = take("pre_head_layer_norm/bias")
