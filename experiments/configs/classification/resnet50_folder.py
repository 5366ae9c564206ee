"""Fine-tune a pretrained backbone on your own image folder (ROOT/<class>/*.jpg).

A torchvision ResNet-50 (or any importable model: --config.model=vit_b16 with a timm or
big_vision file) with a fresh classifier for your classes; SGD with momentum, lr 0.01 at batch
64, 5% warmup then cosine over 20 epochs, inception crop + flip at 224. Set freeze_backbone=True
for a linear probe, class_weights="balanced" for imbalanced folders.

  python -m experiments.train --config=experiments/configs/classification/resnet50_folder.py \
      --workdir=/tmp/jaxvision/mydata --config.data_dir=ROOT \
      --config.init_from=resnet50.safetensors

Convert torchvision's weights once to safetensors (README, "Pretrained weights"). Expected:
depends on the data; CI runs its smoke path on generated images.
"""

from ml_collections import config_dict

from experiments.configs.common import base_config


def get_config():
    config = base_config()
    config.dataset = "folder"
    config.image_size = 224
    config.crop = "inception"
    config.flip = True
    config.model = "resnet50"
    # Required: the pretrained weights (a run refuses to start without them; set it to "" to
    # train from scratch on purpose).
    config.init_from = config_dict.placeholder(str)
    config.batch_size = 64
    config.num_epochs = 20.0
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.lr_batch_base = 64
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-4
    config.label_smoothing = 0.1
    config.log_every_steps = 20
    config.checkpoint_every_steps = 500
    return config
