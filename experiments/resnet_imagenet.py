"""Trains ResNet-50 v1.5 on ImageNet (TFDS imagenet2012 from a data dir).

  python -m experiments.resnet_imagenet \
      --config=experiments/configs/classification/resnet50_imagenet.py \
      --workdir=/tmp/jaxvision/r50 --config.data_dir=$TFDS_DATA_DIR

Expected ~76% top-1 after 90 epochs (see the config's docstring for the recipe). The same command
runs on one CPU, one GPU, a multi-GPU host or a TPU VM; rerunning it resumes.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

from experiments.classification import train_and_evaluate  # noqa: E402
from jaxvision import cli  # noqa: E402

if __name__ == "__main__":
    cli.run(train_and_evaluate)
