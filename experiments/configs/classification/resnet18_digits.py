"""A small ResNet-18 on scikit-learn's handwritten digits at their own 8x8: no download.

1,797 real 8x8 grayscale images, a stratified 80/20 train/test split with a fixed seed. The
BatchNorm model on the embedded data: the multi-host and preemption tests train it. The Quickstart
job (configs/classification/simple_cnn_digits.py, a simple CNN at 16x16) is more accurate and as
fast.

  python -m experiments.train --config=experiments/configs/classification/resnet18_digits.py \
      --workdir=/tmp/jaxvision/resnet_digits

Expected: 98.3-100% top-1 on the 360 test images (seeds 0-4) in about 15 s on 2 CPU cores
(experiments/RESULTS.md).
"""

from experiments.configs.common import base_config


def get_config():
    config = base_config()
    config.dataset = "digits"
    config.image_size = 8
    config.crop = "pad"  # +-1 pixel shifts; flips would turn digits into other shapes
    config.pad = 1
    config.flip = False
    config.eval_crop_ratio = 1.0
    config.model = "resnet18"
    config.model_kwargs.stem = "small"
    config.model_kwargs.width = 16
    config.batch_size = 128
    config.total_steps = 400
    config.learning_rate = 0.2
    config.warmup_epochs = 2.0
    config.weight_decay = 5e-4
    config.log_every_steps = 50
    config.checkpoint_every_steps = 200
    config.keep_checkpoints = 2
    return config
