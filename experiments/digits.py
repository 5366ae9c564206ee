"""Trains a simple CNN on the embedded handwritten digits: the Quickstart job (no download).

  python -m experiments.digits --workdir=/tmp/jaxvision/digits [--config.seed=1 ...]

The config defaults to experiments/configs/classification/simple_cnn_digits.py; any config file runs
here (e.g. configs/classification/resnet18_digits.py). Rerunning with the same workdir resumes from
its latest checkpoint.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

import os  # noqa: E402

from experiments.classification import train_and_evaluate  # noqa: E402
from jaxvision import cli  # noqa: E402

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(__file__), "configs", "classification", "simple_cnn_digits.py"
)

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
