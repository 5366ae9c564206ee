"""Fixtures shared across the test folders."""

import pytest
import tensorflow_datasets as tfds


@pytest.fixture
def mock_tfds(monkeypatch):
    """TFDS's random-example mock, plus what it leaves out: the dataset counts as prepared."""
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    array_record = tfds.core.FileFormat.ARRAY_RECORD
    monkeypatch.setattr(tfds.core.DatasetInfo, "file_format", property(lambda self: array_record))
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield
