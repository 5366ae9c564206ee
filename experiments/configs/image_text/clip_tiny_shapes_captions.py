"""The captioned shapes recipe of siglip_tiny_shapes_captions.py with CLIP: `clip_tiny` (a
class token, a causal text tower pooled at end-of-text) and CLIP's softmax loss; the same
data, optimizer, steps and evaluations.

  python -m experiments.image_text \
      --config=experiments/configs/image_text/clip_tiny_shapes_captions.py \
      --workdir=/tmp/jaxvision/clip_shapes

Expected: see docs/results/image_text.md.
"""

from experiments.configs.image_text import siglip_tiny_shapes_captions


def get_config():
    config = siglip_tiny_shapes_captions.get_config()
    config.model = "clip_tiny"
    return config
