"""Trains a simple CNN on the embedded handwritten digits: the Quickstart job (no download).

  python -m experiments.digits --workdir=/tmp/jaxvision/digits [--config.seed=1 ...]

The config defaults to experiments/configs/digits.py; any config file runs here (e.g.
configs/resnet_digits.py). Rerunning with the same workdir resumes from its latest checkpoint.
"""

import os

from experiments.classification import train_and_evaluate
from jaxvision import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "digits.py")

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
