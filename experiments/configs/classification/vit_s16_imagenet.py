"""ViT-S/16 on ImageNet-1k, big_vision's "better plain ViT baseline" (Beyer et al. 2022).

Global-average pooling, fixed 2-D sin-cos position embeddings, batch 1024, AdamW (lr 1e-3,
decoupled weight decay 1e-4) with 10k warmup steps then cosine over 90 epochs, gradient
clipping at 1.0, RandAugment (2, 10), mixup 0.2, inception crop + flip at 224, bf16 compute.

  python -m experiments.train --config=experiments/configs/classification/vit_s16_imagenet.py \
      --workdir=/tmp/jaxvision/vit_s16 --config.data_dir=$TFDS_DATA_DIR

Expected: 76.5% top-1 after 90 epochs (big_vision's figure on TPUv3-8); not yet run with
jaxvision. CI runs its smoke path on mock data.
"""

from experiments.configs.classification import resnet50_imagenet


def get_config():
    config = resnet50_imagenet.get_config()
    config.model = "vit_s16"
    config.model_kwargs = {"pool": "gap", "posemb": "sincos2d", "class_token": False}
    config.batch_size = 1024
    config.num_epochs = 90.0
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.lr_batch_base = 1024
    config.warmup_epochs = 10_000 * 1024 / 1_281_167  # 10k steps
    config.weight_decay = 1e-4
    config.grad_clip_norm = 1.0
    config.label_smoothing = 0.0
    config.randaugment_ops = 2
    config.randaugment_magnitude = 10
    config.mixup_alpha = 0.2
    return config
