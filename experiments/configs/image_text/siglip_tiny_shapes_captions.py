"""A small SigLIP trained from scratch on the embedded captioned shapes (no download, 2 CPU
cores).

32x32 images of one or two coloured shapes, each with a caption saying what was drawn ("a
small red star left of a large blue circle"; jaxvision.data.shapes_captions; five colour-shape
combinations never appear in training); `siglip_tiny` (ViT and text towers 64 wide and 2
deep, 8 px patches, the captions' 22-word vocabulary, text pooled at the end token) with
SigLIP's sigmoid loss, AdamW, batch 128. Every evaluation reports zero-shot classification of
the one-shape test images by their class prompts ("a red star"), seen and held-out
combinations apart, retrieval recall@1/5/10 both ways over the 1,000 test pairs, and the
share of two-shape images closer to "A left of B" than to "B left of A".

  python -m experiments.image_text --workdir=/tmp/jaxvision/siglip_shapes

Expected: see docs/results/image_text.md.
"""

from experiments.configs.common import base_config, image_text_fields


def get_config():
    config = image_text_fields(base_config())
    config.model = "siglip_tiny"
    config.image_size = 32
    config.dataset_options.image_size = 32
    config.dataset_options.num_train = 10000
    config.dataset_options.num_test = 1000
    config.batch_size = 128
    config.total_steps = 3000
    config.learning_rate = 1e-3
    config.lr_batch_base = 128
    config.weight_decay = 1e-4
    config.warmup_epochs = 1.28  # 100 steps
    config.log_every_steps = 100
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
