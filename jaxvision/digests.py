"""Digests of a state's arrays, written with a checkpoint and checked when it is read back, so
that bytes damaged on disk are found instead of restored.

An array's digest is the sum, modulo 2**32, of a 32-bit hash of each of its 32-bit words
together with the word's position in the whole array, in two independent lanes (64 bits).
A sum does not depend on the order it is taken in: it is the same whatever the sharding, so
each device hashes the shards it holds, XLA adds the parts across devices and hosts, and a
checkpoint written by 8 devices on 2 hosts verifies when one device reads it back whole. The
hash (murmur3's finaliser) mixes every bit of a word and its position, so any change of a
word changes the digest, and several changes cancel with a chance of about 2**-64.

Computed on the devices in one jitted program per state structure; `benchmarks/checkpoint_digest.py`
measures the cost.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Each lane hashes (word, position) with its own key: two 32-bit sums, one 64-bit digest.
_LANES = (np.uint32(0x9E3779B9), np.uint32(0x7F4A7C15))
_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _fmix32(h):
    """murmur3's 32-bit finaliser: a bijection in which every input bit flips about half of
    the output bits."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array | None:
    """`x`'s bits as uint32 words (one per element; two per 8-byte element, on a last axis),
    or None for a dtype without a whole-byte layout here (e.g. int4)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    if _bit_width(x.dtype) != size * 8:
        return None
    if size in _UNSIGNED:
        return lax.bitcast_convert_type(x, _UNSIGNED[size]).astype(jnp.uint32)
    if size == 8:
        return lax.bitcast_convert_type(x, jnp.uint32)
    return None


def _bit_width(dtype) -> int:
    """The bits an element holds (4 for int4, whose itemsize is 1)."""
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.finfo(dtype).bits
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).bits
    return jnp.dtype(dtype).itemsize * 8


def _position(shape) -> jax.Array:
    """[*shape] uint32: each element's row-major index in the whole array (modulo 2**32)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _digest(words: jax.Array) -> jax.Array:
    """[2] uint32: the two lanes' sums over `words`."""
    position = _position(words.shape)
    lanes = [jnp.sum(_fmix32(words ^ _fmix32(position + key)), dtype=jnp.uint32) for key in _LANES]
    return jnp.stack(lanes)


@jax.jit
def _digests(leaves: list) -> jax.Array:
    return jnp.stack([_digest(words) for words in map(_words, leaves)])


def leaf_name(path) -> str:
    """ "a/b/0/c" for a tree path of dict keys, attributes and indices alike (Orbax stores
    dataclasses and named tuples as dicts, so a restored tree names its leaves the same)."""
    parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return "/".join(str(part) for part in parts)


def state_digests(tree) -> dict[str, str]:
    """{leaf name: "dtype:16 hex digits"} for every array of `tree` with a fixed bit layout.

    Every process of a multi-host run calls it with the same tree (it runs one program over
    the global arrays) and gets the same answer."""
    named = [
        (leaf_name(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape")
    ]
    named = [(name, leaf) for name, leaf in named if _words_shape_ok(leaf)]
    if not named:
        return {}
    values = np.asarray(jax.device_get(_digests([leaf for _, leaf in named])))
    return {
        name: f"{leaf.dtype}:{int(a):08x}{int(b):08x}"
        for (name, leaf), (a, b) in zip(named, values, strict=True)
    }


def _words_shape_ok(leaf) -> bool:
    """Whether `_words` takes `leaf` (checked on its shape and dtype alone, outside jit)."""
    try:
        return jax.eval_shape(_words, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)) is not None
    except (TypeError, ValueError):
        return False


def mismatches(tree, recorded: dict[str, str]) -> list[str]:
    """The names of `tree`'s arrays whose digest differs from `recorded` (`state_digests` of
    the tree as it was written). Arrays read back in another dtype than written, and arrays
    without a recorded digest, are not compared."""
    found = state_digests(tree)
    return sorted(
        name
        for name, digest in found.items()
        if name in recorded
        and recorded[name].split(":")[0] == digest.split(":")[0]
        and recorded[name] != digest
    )
