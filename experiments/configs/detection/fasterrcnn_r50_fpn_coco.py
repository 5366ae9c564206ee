"""Faster R-CNN ResNet-50 FPN on COCO 2017, torchvision's reference recipe.

torchvision's references/detection (fasterrcnn_resnet50_fpn): 26 epochs of 16 images (8 GPUs
x 2), SGD momentum 0.9 at 0.02 with weight decay 1e-4, 1,000 warmup iterations, x0.1 at
epochs 16 and 22; images resized to a shorter side of 800 (longer at most 1333), horizontal
flips; the ImageNet ResNet-50 backbone with frozen BatchNorm and conv1 + layer1 frozen
(trainable_backbone_layers=3). The RPN and RoI heads keep torchvision's defaults (2,000 / 1,000
proposals per image in training / evaluation, 256 anchors and 512 RoIs sampled per image;
score_thresh 0.05, nms_thresh 0.5, 100 detections per image).

  python -m experiments.detection \
      --config=experiments/configs/detection/fasterrcnn_r50_fpn_coco.py \
      --workdir=DIR --config.data_dir=TFDS_DATA_DIR \
      --config.init_from=resnet50_imagenet.safetensors
  (or --config.dataset=coco_json --config.data_dir=COCO_ROOT with annotations/instances_*.json)

Expected: 37.0 box AP on val2017, the reference's figure (torchvision's COCO_V1 weights); not
yet reproduced here. Differences from the reference: every image is padded to a fixed
1344 x 1344 canvas (fixed shapes; torchvision pads each batch to its largest image, a multiple
of 32, and groups batches by aspect ratio), the RoIs are sampled by a different random stream
(the same distribution), weight decay skips norms and biases, warmup rises linearly from 0
(torchvision's from 0.001 x), and PIL resizes the images (antialiased).
"""

from experiments.configs.detection import retinanet_r50_fpn_coco


def get_config():
    # RetinaNet's COCO recipe (data, resize, schedule, SGD, frozen layers) with this model.
    config = retinanet_r50_fpn_coco.get_config()
    config.model = "fasterrcnn_resnet50_fpn"
    config.learning_rate = 0.02  # torchvision's for Faster R-CNN (RetinaNet's: 0.01)
    return config
