"""A small Faster R-CNN on the embedded shapes set: two-stage detection on 2 CPU cores, no
download.

128x128 synthetic images (jaxvision.data.shapes, as retinanet_shapes.py: training images of
0-10 objects, each seen once; the 500 test images hold 0-5), a ResNet-18 body at width 32
with a 64-channel FPN on P2-P5 (+ pool), anchors of 16 ... 256 px, 500 proposals per training
image (200 in evaluation), 64 RoIs sampled per image, up to half of them foreground, pooled
7x7 with one sample per bin for a 256-wide box head; trained from scratch with AdamW and
flips, 3,600 steps of 8 on 28,800 images; COCO box AP on the test images.

  python -m experiments.detection --config=experiments/configs/detection/fasterrcnn_shapes.py \\
      --workdir=/tmp/jaxvision/shapes_fasterrcnn

Slower and more accurate (AP50 0.940 in about 35 minutes alone on 2 cores, 2026-12-03, with a
quarter of the RoIs foreground): torchvision's 2 x 2 samples per bin, 3,200 steps of 16 on
51,200 images:

  python -m experiments.detection --config=experiments/configs/detection/fasterrcnn_shapes.py \\
      --workdir=DIR --config.model_kwargs.roi_sampling_ratio=2 --config.batch_size=16 \\
      --config.lr_batch_base=16 --config.total_steps=3200 \\
      --config.dataset_options.num_train=51200 --config.detection.box_positive_fraction=0.25

Expected: see experiments/RESULTS.md ("Detection").
"""

from experiments.configs.common import base_config, detection_fields


def get_config():
    config = detection_fields(base_config())
    config.image_size = 128
    config.flip = True
    config.model = "fasterrcnn_resnet18_fpn_small"
    config.model_kwargs.width = 32
    # One sample per bin (torchvision: 2 x 2): a step 1.4x faster (experiments/RESULTS.md,
    # "Towards 15 minutes")
    config.model_kwargs.roi_sampling_ratio = 1
    # 64 RoIs per image (torchvision: 512), enough for scenes of at most 10 objects, and up to
    # half of them foreground (torchvision: a quarter): the box head learns the classes from
    # twice the examples, AP50 0.914 against 0.876 at 4,000 steps
    config.detection.box_batch_size_per_image = 64
    config.detection.box_positive_fraction = 0.5
    config.dataset_options.num_train = 28800
    config.dataset_options.train_max_objects = 10  # the test images keep 0-5
    config.batch_size = 8
    config.total_steps = 3600
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.lr_batch_base = 8
    config.weight_decay = 1e-4
    config.grad_clip_norm = 1.0
    config.warmup_epochs = 0.25  # 900 steps; 200 of 4,000 cost 0.055 AP50
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
