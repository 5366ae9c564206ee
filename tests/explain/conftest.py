"""Trained digits models the explanation tests share: the Quickstart CNN (a flattening head;
the session's tiny digits run, tests/conftest.py) and the BatchNorm ResNet-18 (global average
pooling: what Grad-CAM assumes), both short runs, each trained once per test session (the
session cache)."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from experiments.classification import train_and_evaluate
from jaxvision.explain import ModelFunction
from jaxvision.predictor import Predictor
from tests.experiments.helpers import jaxvision_in_process as jaxvision  # noqa: F401
from tests.experiments.helpers import load_config

QUIET = dict(log_every_steps=1000, checkpoint_every_steps=0)


@pytest.fixture(scope="session")
def digits_images():
    """32 held-out digits (the last of the set) as uint8 [8, 8, 1], and their labels."""
    data = load_digits()
    images = [(im * 255 / 16).astype(np.uint8)[:, :, None] for im in data.images[-32:]]
    return images, data.target[-32:]


def _trained(session_cache, name, config):
    """(ModelFunction, workdir) of a run of `config`, trained once per session."""

    def build(folder):
        train_and_evaluate(config, f"{folder}/run")
        return None

    folder, _ = session_cache.get(name, build)
    workdir = f"{folder}/run"
    return ModelFunction.of(Predictor.from_workdir(workdir)), workdir


@pytest.fixture(scope="session")
def cnn(digits_run):
    """(ModelFunction, workdir) of the session's Quickstart CNN on 8 x 8 digits (60 steps)."""
    workdir, _ = digits_run
    return ModelFunction.of(Predictor.from_workdir(workdir)), workdir


@pytest.fixture(scope="session")
def resnet(session_cache):
    """(ModelFunction, workdir) of the digits ResNet-18 at width 8: 120 steps of 64 reach ~95%
    test top-1, in a sixteenth of the compute of the config's width 16 at batch 128."""
    config = load_config(
        "classification/resnet18_digits.py", total_steps=120, batch_size=64, **QUIET
    )
    config.model_kwargs.width = 8
    return _trained(session_cache, "explain_resnet_w8", config)
