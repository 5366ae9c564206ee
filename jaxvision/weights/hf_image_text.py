"""Hugging Face transformers CLIP and SigLIP state dicts (`model.safetensors` of a `CLIPModel`
or `SiglipModel`) -> jaxvision.models.image_text (`clip_*`, `siglip_*`).

Both: vision_model.embeddings.{patch_embedding, position_embedding [N(+1), D]},
{vision,text}_model.encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
mlp.fc1, mlp.fc2}, text_model.embeddings.{token_embedding, position_embedding},
text_model.final_layer_norm, logit_scale.
CLIP adds vision_model.embeddings.class_embedding [D], vision_model.pre_layrnorm,
vision_model.post_layernorm (on the class token), visual_projection and text_projection
(bias-free Linears). HF's CLIP default (and OpenAI's weights) is quick GELU: build the model with
activation="quick_gelu" unless the config says `hidden_act: gelu`.
SigLIP adds a patch bias, vision_model.post_layernorm, the MAP head vision_model.head.{probe,
attention.in_proj_*, attention.out_proj, layernorm, mlp}, text_model.head (a Linear with bias)
and logit_bias.
"""

from jaxvision.weights.image_text import torch_block_rules

TITLE = "Hugging Face"

_BLOCK = {
    "norm1": "layer_norm1",
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "out": "self_attn.out_proj",
    "norm2": "layer_norm2",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
_VISION = r"vision_model\.embeddings"
_TEXT = r"text_model\.embeddings"
_HEAD = r"vision_model\.head"

RULES = [
    (rf"{_VISION}\.patch_embedding\.(weight|bias)", "img/patch_embed/proj", "conv"),
    (rf"{_VISION}\.class_embedding", "img/cls_token", "raw"),
    (rf"{_VISION}\.position_embedding\.weight", "img/pos_embed", "raw"),
    (r"vision_model\.pre_layrnorm\.(weight|bias)", "img/norm_pre", "norm"),
    *torch_block_rules(r"vision_model\.encoder\.layers\.(\d+)", r"img/blocks_\1", _BLOCK),
    (r"vision_model\.post_layernorm\.(weight|bias)", "img/norm", "norm"),
    (rf"{_HEAD}\.probe", "img/attn_pool/probe", "raw"),
    (rf"{_HEAD}\.attention\.in_proj_(weight|bias)", "img/attn_pool/attn", "in_proj"),
    (rf"{_HEAD}\.attention\.out_proj\.(weight|bias)", "img/attn_pool/attn/out", "linear"),
    (rf"{_HEAD}\.layernorm\.(weight|bias)", "img/attn_pool/norm", "norm"),
    (rf"{_HEAD}\.mlp\.fc1\.(weight|bias)", "img/attn_pool/mlp/fc1", "linear"),
    (rf"{_HEAD}\.mlp\.fc2\.(weight|bias)", "img/attn_pool/mlp/fc2", "linear"),
    (r"visual_projection\.(weight)", "img_proj", "linear"),
    (rf"{_TEXT}\.token_embedding\.weight", "txt/token_embed/embedding", "raw"),
    (rf"{_TEXT}\.position_embedding\.weight", "txt/pos_embed", "raw"),
    *torch_block_rules(r"text_model\.encoder\.layers\.(\d+)", r"txt/blocks_\1", _BLOCK),
    (r"text_model\.final_layer_norm\.(weight|bias)", "txt/norm", "norm"),
    (r"text_model\.head\.(weight|bias)", "txt/proj", "linear"),
    (r"text_projection\.(weight)", "txt/proj", "linear"),
    (r"logit_scale", "t", "raw"),
    (r"logit_bias", "b", "raw"),
]


def recognizes(names: list[str]) -> bool:
    return any(n.startswith(("vision_model.", "text_model.")) for n in names)
