"""ViT-S/4 on CIFAR-10 from scratch: 64 tokens of 4x4 patches, with the augmentation that ViTs
need on small data (RandAugment, mixup/CutMix, random erasing) and AdamW.

  python -m experiments.train --config=experiments/configs/classification/vit_s4_cifar10.py \
      --workdir=/tmp/jaxvision/vit_cifar10 --config.data_dir=$TFDS_DATA_DIR

Expected: roughly 90% top-1 after 300 epochs (what small ViTs trained from scratch on CIFAR-10
with this kind of augmentation typically reach); no anchor has been measured for this exact
recipe, and it has not yet been run with jaxvision. CI runs its smoke path on mock data.
"""

from experiments.configs.classification import resnet18_cifar10


def get_config():
    config = resnet18_cifar10.get_config()
    config.model = "vit_s4"
    config.model_kwargs = {
        "pool": "gap",
        "posemb": "sincos2d",
        "class_token": False,
        "drop_path_rate": 0.1,
    }
    config.num_epochs = 300.0
    config.batch_size = 256
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.lr_batch_base = 256
    config.warmup_epochs = 10.0
    config.weight_decay = 0.05
    config.grad_clip_norm = 1.0
    config.label_smoothing = 0.1
    config.randaugment_ops = 2
    config.randaugment_magnitude = 9
    config.mixup_alpha = 0.8
    config.cutmix_alpha = 1.0
    config.random_erasing = 0.25
    config.eval_every_steps = 1950
    config.checkpoint_every_steps = 1950
    return config
