"""The digests checkpoints carry: any changed byte is found, and only like is compared."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import digests


def _tree():
    rng = np.random.default_rng(0)
    return {
        "params": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
        "half": jnp.ones((5,), jnp.bfloat16),
        "step": jnp.array(7, jnp.int32),
        "rng": jax.random.key(0),
        "mask": jnp.array([True, False]),
    }


def test_every_array_is_digested_with_its_dtype():
    found = digests.state_digests(_tree())
    assert sorted(found) == ["half", "mask", "params/kernel", "rng", "step"]
    assert found["params/kernel"].startswith("float32:whole:")
    assert found["half"].startswith("bfloat16:whole:")
    assert found["rng"].startswith("key<fry>:whole:")
    assert all(len(d.rsplit(":", 1)[1]) == 8 for d in found.values())
    assert digests.mismatches(_tree(), found) == []


def test_one_flipped_bit_or_swapped_values_are_found():
    recorded = digests.state_digests(_tree())
    kernel = np.asarray(_tree()["params"]["kernel"]).copy()
    flipped = kernel.copy()
    flipped.view(np.uint32)[1, 2] ^= 1 << 31  # the sign of one value
    swapped = kernel.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    for changed in (flipped, swapped):
        tree = {**_tree(), "params": {"kernel": jnp.asarray(changed)}}
        assert digests.mismatches(tree, recorded) == ["params/kernel"]
    tree = {**_tree(), "step": jnp.array(8, jnp.int32), "half": jnp.zeros((5,), jnp.bfloat16)}
    assert digests.mismatches(tree, recorded) == ["half", "step"]


def test_arrays_read_back_in_another_dtype_or_unrecorded_are_not_compared():
    recorded = digests.state_digests(_tree())
    tree = {**_tree(), "half": jnp.ones((5,), jnp.float32), "new": jnp.zeros(3)}
    assert digests.mismatches(tree, recorded) == []
