"""A small RetinaNet on the embedded shapes set: detection on 2 CPU cores, no download.

128x128 synthetic images (jaxvision.data.shapes: five shape classes on textured backgrounds;
the 500 test images hold 0-5 objects each, the 51,200 training images, each seen once, 0-10:
denser scenes give more objects to learn from per image computed), a ResNet-18 body at width
32 with a 64-channel FPN on P3-P5, C2's detail added to P3 and carried up the pyramid, and
GroupNorm heads of one conv; GIoU box loss (torchvision's RetinaNet v2) and, beside the focal
loss, a softmax cross-entropy that teaches the foreground classes apart; trained from scratch
with AdamW and flips (3,200 steps of 16); COCO box AP on the test images.

  python -m experiments.detection --workdir=/tmp/jaxvision/shapes

Expected: see experiments/RESULTS.md ("Detection").
"""

from experiments.configs.common import base_config, detection_fields


def get_config():
    config = detection_fields(base_config())
    config.image_size = 128
    config.flip = True
    config.model = "retinanet_resnet18_fpn_small"
    config.model_kwargs.width = 32  # the ResNet-18 body at half torchvision's width
    config.model_kwargs.head_norm = "group"  # from scratch, GroupNorm heads train far faster
    config.model_kwargs.head_convs = 1  # as accurate as 2 here, for 15% less compute
    # C2's detail added to P3 and carried up the pyramid: better classes for the small shapes
    # for 3.5% more FLOPs (experiments/RESULTS.md, "Detection").
    config.model_kwargs.c2_detail = True
    config.model_kwargs.bottom_up = True
    config.detection.matcher = "iou"  # torchvision's; "atss" was worse here
    config.detection.box_loss = "giou"
    config.detection.class_softmax = 0.5  # what the small shapes missed was their class
    config.dataset_options.num_train = 51200
    config.dataset_options.train_max_objects = 10  # the test images keep 0-5
    config.batch_size = 16
    config.total_steps = 3200
    config.optimizer = "adamw"
    config.learning_rate = 4e-3
    config.lr_batch_base = 16
    config.weight_decay = 1e-4
    config.grad_clip_norm = 1.0
    config.warmup_epochs = 0.25  # 800 steps
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
