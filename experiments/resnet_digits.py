"""Trains a small ResNet-18 on the embedded handwritten digits (no download).

  python -m experiments.resnet_digits --workdir=/tmp/jaxvision/resnet_digits [--config.seed=1 ...]

The config defaults to experiments/configs/resnet_digits.py. Rerunning with the same workdir
resumes from its latest checkpoint.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

import os  # noqa: E402

from experiments.classification import train_and_evaluate  # noqa: E402
from jaxvision import cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "resnet_digits.py")

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
