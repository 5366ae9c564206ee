"""Trains any classification config: the general entry point for a config file.

  python -m experiments.train \
      --config=experiments/configs/classification/vit_s4_cifar10.py --workdir=DIR

`experiments.digits` and `experiments.resnet_imagenet` are this program with a default config (e.g.
the digits' ResNet-18: `--config=experiments/configs/classification/resnet18_digits.py`). Rerunning
with the same workdir resumes from its latest checkpoint.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

from experiments.classification import train_and_evaluate  # noqa: E402
from jaxvision import cli  # noqa: E402

if __name__ == "__main__":
    cli.run(train_and_evaluate)
