"""Mesh construction and the global-batch check."""

import types

import jax
import pytest

from jaxvision.errors import UserError
from jaxvision.sharding import check_global_batch, make_mesh


def test_mesh_fills_minus_one_with_the_device_count():
    mesh = make_mesh([("data", -1)])
    assert mesh.shape == {"data": jax.device_count()}
    assert make_mesh([("data", -1), ("model", 1)]).axis_names == ("data", "model")


def test_bad_meshes_raise_user_error():
    with pytest.raises(UserError, match="more than one axis of size -1"):
        make_mesh([("data", -1), ("model", -1)])
    with pytest.raises(UserError, match=r"needs 3 devices but 1 are present"):
        make_mesh([("data", 3)], devices=jax.devices()[:1])
    with pytest.raises(UserError, match=r"has unknown axis foo: name each axis once, from data"):
        make_mesh([("foo", -1)])
    with pytest.raises(UserError, match=r"has an axis named twice"):
        make_mesh([("data", 1), ("data", -1)])


def test_indivisible_batch_message():
    mesh = types.SimpleNamespace(shape={"data": 4}, axis_names=("data",))  # sizes only
    with pytest.raises(UserError, match=r"batch_size=10 is not divisible by the 4 devices"):
        check_global_batch(10, mesh)
    check_global_batch(12, mesh)
