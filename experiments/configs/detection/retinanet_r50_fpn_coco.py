"""RetinaNet ResNet-50 FPN on COCO 2017, torchvision's reference recipe.

torchvision's references/detection: 26 epochs of 16 images (8 GPUs x 2), SGD momentum 0.9 at
0.01 with weight decay 1e-4, 1,000 warmup iterations, x0.1 at epochs 16 and 22; images resized
to a shorter side of 800 (longer at most 1333), horizontal flips; the ImageNet ResNet-50
backbone with frozen BatchNorm and conv1 + layer1 frozen (trainable_backbone_layers=3).

  python -m experiments.detection --config=experiments/configs/detection/retinanet_r50_fpn_coco.py \
      --workdir=DIR --config.data_dir=TFDS_DATA_DIR \
      --config.init_from=resnet50_imagenet.safetensors
  (or --config.dataset=coco_json --config.data_dir=COCO_ROOT with annotations/instances_*.json)

Expected: 36.4 box AP on val2017, the reference's figure (torchvision's COCO_V1 weights); not
yet reproduced here. Differences from the reference: every image is padded to a fixed
1344 x 1344 canvas (fixed shapes; torchvision pads each batch to its largest image, a multiple
of 32, and groups batches by aspect ratio), weight decay skips norms and biases, warmup rises
linearly from 0 (torchvision's from 0.001 x), and PIL resizes the images (antialiased).
"""

from ml_collections import config_dict

from experiments.configs.common import base_config, detection_fields

COCO_TRAIN_IMAGES = 117_266  # train2017 images with annotations, torchvision's dataloader


def get_config():
    config = detection_fields(base_config())
    config.dataset = "coco/2017"
    config.model = "retinanet_resnet50_fpn"
    config.init_from = config_dict.placeholder(str)  # the ImageNet ResNet-50 (torchvision names)
    config.image_size = 1344
    config.min_size = 800
    config.max_size = 1333
    config.max_boxes = 100
    config.flip = True
    config.trainable_backbone_layers = 3
    config.batch_size = 16
    config.num_epochs = 26.0
    config.total_steps = 0
    config.optimizer = "sgd"
    config.nesterov = False
    config.momentum = 0.9
    config.learning_rate = 0.01
    config.lr_batch_base = 16
    config.weight_decay = 1e-4
    config.schedule = "step"
    config.step_boundaries = (16 / 26, 22 / 26)
    config.warmup_epochs = 1000 * 16 / COCO_TRAIN_IMAGES  # 1,000 iterations
    config.log_every_steps = 100
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 2000
    config.keep_checkpoints = 3
    return config
