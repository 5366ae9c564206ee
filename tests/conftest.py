"""Fixtures shared across the test folders, and a compilation cache for the whole suite."""

import os
import tempfile

import pytest

# Many tests start the same experiments in fresh processes; JAX's persistent compilation cache
# (inherited by those processes through the environment) compiles each program once. Set before
# any test module imports JAX.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxvision-test-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
import tensorflow_datasets as tfds


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS's random-example mock, plus what it leaves out: the dataset counts as prepared."""
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    array_record = tfds.core.FileFormat.ARRAY_RECORD
    monkeypatch.setattr(tfds.core.DatasetInfo, "file_format", property(lambda self: array_record))
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield
