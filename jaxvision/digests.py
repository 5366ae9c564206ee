"""Digests of a state's arrays, written with a checkpoint and checked when it is read back, so
that bytes damaged on disk are found instead of restored.

An array's digest is a CRC-32 of its bytes (zlib's, about 1.4 GB/s on one CPU core; any change
of up to 32 consecutive bits is always found, others are missed with a chance of 2**-32). An
array this process holds whole (one host, whatever its devices) is digested whole, so a
checkpoint of a run on 8 devices verifies when one device reads it back; so is an array
replicated over several hosts (data parallel). An array sharded over several hosts is digested
per shard, by the process that holds the shard's first replica, and
the processes add their parts: the digest then depends on how the array was cut, which is
recorded with it ("layout"), and is compared only when it is read back cut the same way (a
resume of the same mesh). `benchmarks/checkpoint_digest.py` measures the cost.
"""

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.experimental import multihost_utils


def leaf_name(path) -> str:
    """ "a/b/0/c" for a tree path of dict keys, attributes and indices alike (Orbax stores
    dataclasses and named tuples as dicts, so a restored tree names its leaves the same)."""
    parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return "/".join(str(part) for part in parts)


def _crc(data, start: int = 0) -> int:
    flat = np.ascontiguousarray(data).reshape(-1)
    return zlib.crc32(memoryview(flat.view(np.uint8)), start)


def _layout(leaf) -> str:
    """A short name of how `leaf` is cut into shards (the same on every process)."""
    indices = leaf.sharding.devices_indices_map(leaf.shape).values()
    cuts = sorted({repr(tuple((s.start, s.stop) for s in index)) for index in indices})
    return f"s{zlib.crc32(';'.join(cuts).encode()):08x}"


def _owned_shards_crc(leaf) -> int:
    """The sum (mod 2**32) of the CRCs of the shards whose first replica this process holds,
    each seeded with where the shard lies."""
    total = 0
    for shard in leaf.addressable_shards:
        if shard.replica_id == 0:
            where = repr(tuple((s.start, s.stop) for s in shard.index)).encode()
            total += _crc(np.asarray(shard.data), zlib.crc32(where))
    return total % 2**32


def _whole(leaf):
    """`leaf` whole as numpy, or None when this process holds only shards of it."""
    if getattr(leaf, "is_fully_addressable", True):
        return np.asarray(leaf)
    if leaf.is_fully_replicated:  # every process holds it whole (data parallel)
        return np.asarray(leaf.addressable_data(0))
    return None


def state_digests(tree) -> dict[str, str]:
    """{leaf name: "dtype:layout:8 hex digits"} for every array of `tree`; layout "whole" for an
    array this process holds whole. Every process of a multi-host run calls it with the same
    tree (it joins one gather when arrays span hosts) and gets the same answer."""
    named = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not (hasattr(leaf, "dtype") and hasattr(leaf, "shape")):
            continue
        dtype = str(leaf.dtype)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        named.append((leaf_name(path), dtype, leaf))

    def digest(item):  # zlib releases the GIL: the arrays are digested side by side
        name, dtype, leaf = item
        whole = _whole(leaf)
        if whole is not None:
            return name, dtype, "whole", _crc(whole)
        return name, dtype, _layout(leaf), _owned_shards_crc(leaf)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        digested = list(pool.map(digest, named))
    sharded = [d for d in digested if d[2] != "whole"]
    if sharded and jax.process_count() > 1:  # the processes add their shards' parts
        parts = np.array([crc for *_, crc in sharded], np.uint32)
        gathered = multihost_utils.process_allgather(parts)  # [processes, arrays]
        total = np.sum(gathered.astype(np.uint64), axis=0) % 2**32
        summed = {d[0]: int(crc) for d, crc in zip(sharded, total, strict=True)}
        digested = [(n, t, lay, summed.get(n, crc)) for n, t, lay, crc in digested]
    return {name: f"{dtype}:{layout}:{crc:08x}" for name, dtype, layout, crc in digested}


def mismatches(tree, recorded: dict[str, str]) -> list[str]:
    """The names of `tree`'s arrays whose digest differs from `recorded` (`state_digests` of
    the tree as it was written). Arrays read back in another dtype or cut another way than
    written, and arrays without a recorded digest, are not compared."""
    found = state_digests(tree)
    return sorted(
        name
        for name, digest in found.items()
        if name in recorded
        and recorded[name].rsplit(":", 1)[0] == digest.rsplit(":", 1)[0]
        and recorded[name] != digest
    )
