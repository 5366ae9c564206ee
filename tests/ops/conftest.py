"""The torchvision cases of tests/ops, from two sources: the committed fixtures (seed 0 of
the make_*_fixtures.py scripts in tests/ops/fixtures, no torch needed) and, where torch is
installed, fresh cases that torchvision computes in the test (other seeds)."""

import os

import numpy as np
import pytest

from tests.ops.helpers import unflatten

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FRESH_SEEDS = (1, 2)


def _load(name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz")) as data:
        return unflatten({k: data[k] for k in data.files})


@pytest.fixture(params=["stored", "torchvision"])
def cases(request):
    """cases(name) -> a list of cases (nested dicts of numpy arrays) of make_ops_fixtures'
    CASES[name] (or make_roi_fixtures', make_grid_fixtures'...); the "torchvision" variant
    skips without torch."""
    if request.param == "stored":
        return lambda name: [_load(name)]
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from tests.ops.fixtures import (
        make_fasterrcnn_fixtures,
        make_grid_fixtures,
        make_ops_fixtures,
        make_roi_fixtures,
    )

    def fresh(name):
        make = {
            **make_ops_fixtures.CASES,
            **make_roi_fixtures.CASES,
            **make_fasterrcnn_fixtures.CASES,
            **make_grid_fixtures.CASES,
        }[name]
        return [unflatten(make_ops_fixtures.flatten(make(seed))) for seed in FRESH_SEEDS]

    return fresh
