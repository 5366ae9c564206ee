"""ResNet-18 (3x3 stem, no max pool) on CIFAR-10: the standard 32x32 recipe.

SGD with Nesterov momentum 0.9, lr 0.1 at batch 128, weight decay 5e-4, cosine over 200 epochs,
pad-4 crop + flip.

  python -m experiments.train --config=experiments/configs/classification/resnet18_cifar10.py \
      --workdir=/tmp/jaxvision/r18_cifar10 --config.data_dir=$TFDS_DATA_DIR

Data: `tfds build cifar10 --file_format=array_record`. Expected: >= 94% top-1 (95.0-95.5% is
the usual result of this recipe in PyTorch); not yet run with jaxvision. CI runs its smoke path
on mock data.
"""

from experiments.configs.common import base_config


def get_config():
    config = base_config()
    config.dataset = "cifar10"
    config.test_split = "test"
    config.image_size = 32
    config.crop = "pad"
    config.pad = 4
    config.flip = True
    config.eval_crop_ratio = 1.0
    config.model = "resnet18"
    config.model_kwargs.stem = "small"
    config.batch_size = 128
    config.num_epochs = 200.0
    config.learning_rate = 0.1
    config.lr_batch_base = 128
    config.warmup_epochs = 1.0
    config.weight_decay = 5e-4
    config.eval_every_steps = 3910  # every 10 epochs
    config.checkpoint_every_steps = 3910
    return config
