"""open_clip CLIP state dicts (safetensors) -> jaxvision.models.image_text (`clip_*`).

open_clip's `CLIP` (the OpenAI / LAION ViT models; `open_clip_pytorch_model.safetensors` on the
Hugging Face hub, or a `.pt` converted once: docs/models_and_weights.md):
  visual.conv1 (no bias), visual.class_embedding [D], visual.positional_embedding [1 + N, D],
  visual.ln_pre, visual.transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2,
  mlp.c_fc, mlp.c_proj}, visual.ln_post, visual.proj [D, E] (used as x @ proj),
  token_embedding, positional_embedding [L, D], transformer.resblocks.N..., ln_final,
  text_projection [D, E] (or a Linear: text_projection.weight/bias), logit_scale (a scalar),
  logit_bias (if trained with the sigmoid loss).
The fused in_proj [3D, D] is split into query/key/value; `x @ proj` matrices are our kernels as
they are. OpenAI's weights need activation="quick_gelu"; LAION's use the exact GELU (default).
"""

from jaxvision.weights.image_text import torch_block_rules

TITLE = "open_clip"

_BLOCK = {
    "norm1": "ln_1",
    "qkv": "attn.in_proj",
    "out": "attn.out_proj",
    "norm2": "ln_2",
    "fc1": "mlp.c_fc",
    "fc2": "mlp.c_proj",
}

RULES = [
    (r"visual\.conv1\.(weight)", "img/patch_embed/proj", "conv"),
    (r"visual\.class_embedding", "img/cls_token", "raw"),
    (r"visual\.positional_embedding", "img/pos_embed", "raw"),
    (r"visual\.ln_pre\.(weight|bias)", "img/norm_pre", "norm"),
    *torch_block_rules(r"visual\.transformer\.resblocks\.(\d+)", r"img/blocks_\1", _BLOCK),
    (r"visual\.ln_post\.(weight|bias)", "img/norm", "norm"),
    (r"visual\.proj", "img_proj/kernel", "raw"),
    (r"token_embedding\.weight", "txt/token_embed/embedding", "raw"),
    (r"positional_embedding", "txt/pos_embed", "raw"),
    *torch_block_rules(r"transformer\.resblocks\.(\d+)", r"txt/blocks_\1", _BLOCK),
    (r"ln_final\.(weight|bias)", "txt/norm", "norm"),
    (r"text_projection", "txt/proj/kernel", "raw"),
    (r"text_projection\.(weight|bias)", "txt/proj", "linear"),
    (r"logit_scale", "t", "raw"),
    (r"logit_bias", "b", "raw"),
]


def recognizes(names: list[str]) -> bool:
    return "visual.conv1.weight" in names or "token_embedding.weight" in names
