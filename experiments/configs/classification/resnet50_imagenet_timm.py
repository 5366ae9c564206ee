"""ResNet-50 on ImageNet-1k, timm's stronger recipe ("ResNet strikes back", procedure A1).

LAMB, lr 5e-3 at batch 2048 (scaled linearly), weight decay 0.01, cosine over 600 epochs after
5 warmup epochs, RandAugment (2 ops, magnitude 7), mixup 0.2 / CutMix 1.0 (switch 0.5), EMA of
the weights, bf16 compute, inception crop + flip at 224, eval at 224 / 0.95.

  python -m experiments.resnet_imagenet \
      --config=experiments/configs/classification/resnet50_imagenet_timm.py \
      --workdir=/tmp/jaxvision/r50_a1 --config.data_dir=$TFDS_DATA_DIR

Expected: ~80.4% top-1 (timm's reported A1 result; timm trains A1 with a binary cross-entropy
loss, jaxvision with softmax cross-entropy and label smoothing 0.1, which may land a few tenths
lower). Not yet run with jaxvision; CI runs its smoke path on mock data.
"""

from experiments.configs.classification import resnet50_imagenet


def get_config():
    config = resnet50_imagenet.get_config()
    config.batch_size = 2048
    config.num_epochs = 600.0
    config.optimizer = "lamb"
    config.learning_rate = 5e-3
    config.lr_batch_base = 2048
    config.warmup_epochs = 5.0
    config.weight_decay = 0.01
    config.randaugment_ops = 2
    config.randaugment_magnitude = 7
    config.mixup_alpha = 0.2
    config.cutmix_alpha = 1.0
    config.mix_switch_prob = 0.5
    config.ema_decay = 0.9999
    config.eval_crop_ratio = 0.95
    return config
