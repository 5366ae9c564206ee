"""YOLO11n on the embedded shapes set: a real-time detector on 2 CPU cores, no download.

128x128 synthetic images (jaxvision.data.shapes: five shape classes on textured backgrounds; the
500 test images hold 0-5 objects each), YOLO11's n scale (2.6 M parameters; at 128 px its head
reads 16x16, 8x8 and 4x4 maps: 336 anchor points), the reference's task-aligned loss and its
augmentation (mosaic of four images, closed for the last epochs; random affine; HSV; flips),
trained from scratch with AdamW and an EMA of the weights; COCO box AP of the EMA weights on the
test images, letterboxed as the reference validates.

  python -m experiments.detection \\
      --config=experiments/configs/detection/yolo11n_shapes.py --workdir=/tmp/jaxvision/yolo

Expected: see docs/results/detection.md.
"""

from experiments.configs.common import base_config, detection_fields


def get_config():
    config = detection_fields(base_config())
    config.image_size = 128
    config.model = "yolo11n"
    config.yolo_augment = True
    # The reference's default.yaml: mosaic 1.0, translate 0.1, scale 0.5, HSV (0.015, 0.7,
    # 0.4), flips left-right 0.5; mosaic closes for the last 2 of the 8 epochs here (its 10 of
    # a COCO run's 100+).
    config.yolo_augment_options.close_mosaic_epochs = 2
    config.dataset_options.num_train = 6400
    config.dataset_options.train_max_objects = 10  # the test images keep 0-5
    config.batch_size = 16
    config.total_steps = 3200  # 8 epochs of 6,400
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.lr_batch_base = 16
    config.weight_decay = 5e-4
    config.grad_clip_norm = 10.0  # the reference clips at 10
    config.warmup_epochs = 0.5  # 200 steps
    config.ema_decay = 0.9999
    config.ema_warmup = True  # the reference's EMA ramps up over its first ~2,000 updates
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
