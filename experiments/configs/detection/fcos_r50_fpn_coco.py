"""FCOS ResNet-50 FPN on COCO 2017, torchvision's reference recipe.

torchvision's references/detection (fcos_resnet50_fpn): 26 epochs of 16 images (8 GPUs x 2),
SGD momentum 0.9 at 0.01 with weight decay 1e-4, 1,000 warmup iterations, x0.1 at epochs 16
and 22, mixed precision (--amp); images resized to a shorter side of 800 (longer at most
1333), horizontal flips; the ImageNet ResNet-50 backbone with frozen BatchNorm and conv1 +
layer1 frozen (trainable_backbone_layers=3). FCOS's own options are torchvision's defaults
(center_sampling_radius 1.5; score_thresh 0.2, nms_thresh 0.6, 100 detections per image for
evaluation).

  python -m experiments.detection --config=experiments/configs/detection/fcos_r50_fpn_coco.py \
      --workdir=DIR --config.data_dir=TFDS_DATA_DIR \
      --config.init_from=resnet50_imagenet.safetensors
  (or --config.dataset=coco_json --config.data_dir=COCO_ROOT with annotations/instances_*.json)

Expected: 39.2 box AP on val2017, the reference's figure (torchvision's COCO_V1 weights); not
yet reproduced here. Differences from the reference: every image is padded to a fixed
1344 x 1344 canvas (fixed shapes; torchvision pads each batch to its largest image, a multiple
of 32, and groups batches by aspect ratio), bfloat16 compute stands for torch's float16
autocast (no loss scaling needed), weight decay skips norms and biases, warmup rises linearly
from 0 (torchvision's from 0.001 x), and PIL resizes the images (antialiased).
"""

from experiments.configs.detection import retinanet_r50_fpn_coco


def get_config():
    # RetinaNet's COCO recipe (data, resize, schedule, SGD, frozen layers) with this model.
    config = retinanet_r50_fpn_coco.get_config()
    config.model = "fcos_resnet50_fpn"
    config.dtype = "bfloat16"  # torchvision's --amp; parameters stay float32
    return config
