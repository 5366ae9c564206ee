"""A small RetinaNet on the embedded shapes set: detection on 2 CPU cores, no download.

128x128 synthetic images (jaxvision.data.shapes: five shape classes on textured backgrounds,
0-5 objects each; 72,000 for training, each seen once: more distinct images beat more passes,
and with 4,000 the detector overfits, train-split AP 0.67 against 0.46 on test), a ResNet-18
body at width 32 with a 64-channel FPN on P3-P5 and GroupNorm heads of one conv, GIoU box loss
(torchvision's RetinaNet v2), trained from scratch with AdamW and flips (4,500 steps of 16);
COCO box AP on the 500 test images.

  python -m experiments.detection --workdir=/tmp/jaxvision/shapes

More accurate and slower (about 13 minutes here): C2's detail in the pyramid, at batch 8:

  python -m experiments.detection --workdir=DIR --config.model_kwargs.c2_detail=True \
    --config.model_kwargs.bottom_up=True --config.batch_size=8 --config.total_steps=9000 \
    --config.learning_rate=3e-3 --config.lr_batch_base=8

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
    # C2's detail added to P3 and carried up the pyramid: better classes for the small shapes,
    # but slower on CPU than its FLOPs say (see experiments/RESULTS.md, "Detection").
    config.model_kwargs.c2_detail = False
    config.model_kwargs.bottom_up = False
    config.detection.matcher = "iou"  # torchvision's; "atss" was worse here
    config.detection.box_loss = "giou"
    config.dataset_options.num_train = 72000
    config.batch_size = 16
    config.total_steps = 4500
    config.optimizer = "adamw"
    config.learning_rate = 4e-3
    config.lr_batch_base = 16
    config.weight_decay = 1e-4
    config.grad_clip_norm = 1.0
    config.warmup_epochs = 0.25  # 1,125 steps
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
