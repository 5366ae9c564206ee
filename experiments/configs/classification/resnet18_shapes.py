"""A small ResNet-18 that tells the five shapes apart at 64x64, where each object's box is known:
the classifier behind the explanation pictures and their pointing-game scores.

The "shapes_classification" set (jaxvision.data.shapes_classification): one shape per image on a
textured background with clutter, labelled by its kind, generated on access (no download).
ResNet-18 at width 16 with the ImageNet stem (stages at 16, 8, 4 and 2 pixels: Grad-CAM's
default map is C4, 4x4), global average pooling; pad-4 crops and flips; AdamW at 1e-3 for
4,500 steps of 32 images (14.4 epochs of the 10,000; the loss sits at chance for the first ~500).

  python -m experiments.train --config=experiments/configs/classification/resnet18_shapes.py \
      --workdir=/tmp/jaxvision/resnet_shapes

Measured: 91.0% top-1 on the 200 test images, in 21.6 min on 2 CPU cores shared with other
jobs (docs/results/explanations.md).
"""

import ml_collections

from experiments.configs.common import base_config


def get_config():
    config = base_config()
    config.dataset = "shapes_classification"
    config.dataset_options = ml_collections.ConfigDict(
        {"image_size": 64, "num_train": 10000, "num_test": 200}
    )
    config.image_size = 64
    config.crop = "pad"
    config.pad = 4
    config.flip = True
    config.eval_crop_ratio = 1.0  # the whole image: the boxes stay where they are
    config.model = "resnet18"
    config.model_kwargs.stem = "imagenet"
    config.model_kwargs.width = 16
    config.optimizer = "adamw"
    config.batch_size = 32
    config.total_steps = 4500
    config.learning_rate = 1e-3
    config.lr_batch_base = 32
    config.warmup_epochs = 0.2
    config.weight_decay = 1e-4
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1500
    config.keep_checkpoints = 1
    return config
