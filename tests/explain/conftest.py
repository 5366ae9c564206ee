"""Trained digits models the explanation tests share: the Quickstart CNN (a flattening head)
and the BatchNorm ResNet-18 (global average pooling: what Grad-CAM assumes), both short runs."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from experiments.classification import train_and_evaluate
from jaxvision.explain import ModelFunction
from jaxvision.predictor import Predictor
from tests.experiments.helpers import load_config

QUIET = dict(log_every_steps=1000, checkpoint_every_steps=0)


@pytest.fixture(scope="session")
def digits_images():
    """32 held-out digits (the last of the set) as uint8 [8, 8, 1], and their labels."""
    data = load_digits()
    images = [(im * 255 / 16).astype(np.uint8)[:, :, None] for im in data.images[-32:]]
    return images, data.target[-32:]


@pytest.fixture(scope="session")
def cnn(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("explain") / "cnn")
    train_and_evaluate(
        load_config("classification/simple_cnn_digits.py", total_steps=400, **QUIET), workdir
    )
    return ModelFunction.of(Predictor.from_workdir(workdir)), workdir


@pytest.fixture(scope="session")
def resnet(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("explain") / "resnet")
    train_and_evaluate(
        load_config("classification/resnet18_digits.py", total_steps=200, **QUIET), workdir
    )
    return ModelFunction.of(Predictor.from_workdir(workdir)), workdir
