"""ResNet-50 v1.5 on ImageNet-1k, the flax-example / MLPerf-style recipe.

SGD with Nesterov momentum 0.9, lr 0.1 x B/256, 5 warmup epochs then cosine to 0 over 90 epochs,
weight decay 1e-4 on kernels only, label smoothing 0.1, bf16 compute with float32 parameters,
inception crop + flip at 224, eval resize 256 + center crop 224.

  python -m experiments.resnet_imagenet \
      --config=experiments/configs/classification/resnet50_imagenet.py \
      --workdir=/tmp/jaxvision/r50 --config.data_dir=$TFDS_DATA_DIR

Data: imagenet2012 prepared with `tfds build imagenet2012 --file_format=array_record`.
Expected: ~76% top-1 (76.3-76.5% in the flax example and MLPerf references, 90-100 epochs, batch
1024 on TPU/GPU); not yet run with jaxvision. CI runs its smoke path on mock data.
"""

from experiments.configs.common import base_config


def get_config():
    config = base_config()
    config.dataset = "imagenet2012"
    config.test_split = "validation"
    config.image_size = 224
    config.crop = "inception"
    config.flip = True
    config.eval_crop_ratio = 0.875
    config.worker_count = 8
    config.model = "resnet50"
    config.model_kwargs.zero_init_residual = True
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 90.0
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.warmup_epochs = 5.0
    config.nesterov = True
    config.weight_decay = 1e-4
    config.label_smoothing = 0.1
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2500
    return config
