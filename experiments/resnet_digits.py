"""Trains a small ResNet-18 on the embedded handwritten digits (no download).

  python -m experiments.resnet_digits --workdir=/tmp/jaxvision/resnet_digits [--config.seed=1 ...]

The config defaults to experiments/configs/resnet_digits.py. Rerunning with the same workdir
resumes from its latest checkpoint.
"""

import os

from experiments.classification import train_and_evaluate
from jaxvision import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "resnet_digits.py")

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
