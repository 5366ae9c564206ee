"""A small RetinaNet on the embedded shapes set: detection on 2 CPU cores, no download.

128x128 synthetic images (jaxvision.data.shapes: five shape classes on textured backgrounds,
0-8 objects each), a ResNet-18 body at width 16 with a 64-channel FPN on P3-P5 trained from
scratch, flips; COCO box AP on the 500 test images.

  python -m experiments.detection --workdir=/tmp/jaxvision/shapes

Expected: see experiments/RESULTS.md ("Detection").
"""

from experiments.configs.common import base_config, detection_fields


def get_config():
    config = detection_fields(base_config())
    config.image_size = 128
    config.flip = True
    config.model = "retinanet_resnet18_fpn_small"
    config.batch_size = 32
    config.total_steps = 2000
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.lr_batch_base = 32
    config.weight_decay = 1e-4
    config.warmup_epochs = 1.0
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    return config
