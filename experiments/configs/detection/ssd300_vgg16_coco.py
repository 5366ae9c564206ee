"""SSD300 VGG-16 on COCO 2017, torchvision's reference recipe.

torchvision's references/detection: 120 epochs of 32 images (8 GPUs x 4), SGD momentum 0.9 at
0.002 with weight decay 5e-4, x0.1 at epochs 80 and 110; SSD augmentation (photometric
distortion, zoom-out, minimum-IoU crop, flips) and a fixed 300 x 300 resize; the VGG-16
ImageNet features backbone (trainable_backbone_layers=4, conv1-2 frozen).

  python -m experiments.detection --config=experiments/configs/detection/ssd300_vgg16_coco.py \
      --workdir=DIR --config.data_dir=TFDS_DATA_DIR \
      --config.init_from=vgg16_features.safetensors

Expected: 25.1 box AP on val2017, the reference's figure (torchvision's COCO_V1 weights); not
yet reproduced here. Differences from the reference: weight decay skips norms and biases, and
PIL resizes the images (antialiased).
"""

from ml_collections import config_dict

from experiments.configs.common import base_config, detection_fields
from experiments.configs.detection.retinanet_r50_fpn_coco import COCO_TRAIN_IMAGES


def get_config():
    config = detection_fields(base_config())
    config.dataset = "coco/2017"
    config.model = "ssd300_vgg16"
    config.init_from = config_dict.placeholder(str)  # the ImageNet VGG-16 (torchvision names)
    config.image_size = 300  # min_size 0: resized to 300 x 300, the aspect not kept
    config.max_boxes = 100
    config.flip = True
    config.photometric = True
    config.zoom_out = True
    config.iou_crop = True
    config.trainable_backbone_layers = 4
    config.batch_size = 32
    config.num_epochs = 120.0
    config.total_steps = 0
    config.optimizer = "sgd"
    config.nesterov = False
    config.momentum = 0.9
    config.learning_rate = 0.002
    config.lr_batch_base = 32
    config.weight_decay = 5e-4
    config.schedule = "step"
    config.step_boundaries = (80 / 120, 110 / 120)
    config.warmup_epochs = 1000 * 32 / COCO_TRAIN_IMAGES  # torchvision warms up 1,000 iterations
    config.log_every_steps = 100
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 2000
    config.keep_checkpoints = 3
    return config
