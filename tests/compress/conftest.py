"""The trained run the compression tests share: the Quickstart digits CNN at 8x8, briefly
trained (one per test session and worker)."""

import pytest

from experiments.classification import train_and_evaluate
from tests.experiments.helpers import load_config

# 60 steps reach ~95% test top-1: trained enough that int8 rounding flips few predictions.
TINY = dict(image_size=8, pad=1, total_steps=60, log_every_steps=30, checkpoint_every_steps=0)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """(workdir, final metrics) of the tiny digits run."""
    workdir = str(tmp_path_factory.mktemp("compress") / "run")
    final = train_and_evaluate(load_config("classification/simple_cnn_digits.py", **TINY), workdir)
    return workdir, final
