"""What a bundle must be before it predicts (jaxvision.bundle): metadata.json of the right shape,
every file as export wrote it (its size and sha256, recorded in metadata.json's "files"), and
weights and metadata that fit the exported programs' inputs. Each failure is a UserError of one
line naming the file and what to do, so a damaged or mismatched bundle is refused when it is
loaded, never when a server has started or an answer is given.
"""

import hashlib
import json
import os

import jax
import numpy as np

from jaxvision.errors import UserError

_CHUNK = 1 << 22


def digest(file: str) -> dict:
    """{"bytes": size, "sha256": hex digest} of `file`."""
    sha = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return {"bytes": os.path.getsize(file), "sha256": sha.hexdigest()}


def _one_line(error: Exception, limit: int = 200) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redo(path: str) -> str:
    return f"copy the bundle {path} again whole, or export it again"


def parse_metadata(path: str, text: bytes) -> dict:
    """metadata.json's text -> its dict, checked against the layout `bundle.write` writes;
    UserError naming the first entry that is missing or of the wrong type."""
    where = os.path.join(path, "metadata.json")
    try:
        metadata = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{where} is not valid JSON ({e}): {_redo(path)}") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{where} holds a {type(metadata).__name__}, not an object: {_redo(path)}")
    return metadata


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# What each entry of metadata.json must hold: (test, what it should be).
_ENTRIES = {
    "model": (lambda v: isinstance(v, dict), "an object (the run's model.json)"),
    "source": (lambda v: isinstance(v, dict), "an object"),
    "buckets": (
        lambda v: isinstance(v, list) and bool(v) and all(_is_count(b) for b in v),
        "a list of batch sizes of at least 1",
    ),
    "platforms": (lambda v: _strings(v) and bool(v), "a list of platform names"),
    "explain": (
        lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("layer"), str)),
        'null or {"method": ..., "layer": ...}',
    ),
}
_MODEL_ENTRIES = {
    "task": (lambda v: isinstance(v, str), "a task name"),
    "class_names": (_strings, "a list of class names"),
    "image_size": (_is_count, "a whole number of pixels of at least 1"),
    "channels": (_is_count, "a whole number of at least 1"),
}
_FILE_ENTRY = "an object {name: {bytes, sha256}}"


def check_schema(path: str, metadata: dict) -> None:
    """UserError unless `metadata` has every entry a bundle needs, each of its type."""
    where = os.path.join(path, "metadata.json")
    for entries, holder, prefix in (
        (_ENTRIES, metadata, ""),
        (_MODEL_ENTRIES, metadata.get("model"), "model."),
    ):
        for name, (test, should) in entries.items():
            if name not in holder:
                raise UserError(f"{where} has no {prefix}{name}: {_redo(path)}")
            if not test(holder[name]):
                raise UserError(
                    f"{where}: {prefix}{name} is {json.dumps(holder[name])[:60]}, not "
                    f"{should}: {_redo(path)}"
                )
    files = metadata.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(d, dict) and isinstance(d.get("sha256"), str) and isinstance(d.get("bytes"), int)
        for d in files.values()
    ):
        raise UserError(f"{where}: files is not {_FILE_ENTRY}: {_redo(path)}")


def check_files(path: str, metadata: dict, names: list[str]) -> str | None:
    """UserError unless each of `names` (the files the bundle reads) is in the bundle with the
    size and sha256 export recorded; a note (the bundle is loaded unchecked) when it recorded
    none: a bundle exported before the digests were written."""
    for name in names:
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f"bundle {path} has no {name}: {_redo(path)}")
    recorded = metadata.get("files")
    if recorded is None:
        return (
            f"note: bundle {path} has no file digests (exported by an older jaxvision): damage "
            "to its files cannot be told; export it again to have them checked"
        )
    for name in names:
        if name not in recorded:
            raise UserError(
                f"bundle {path}: metadata.json records no digest of {name}: {_redo(path)}"
            )
        found, expected = digest(os.path.join(path, name)), recorded[name]
        if found["bytes"] != expected["bytes"]:
            raise UserError(
                f"bundle {path}: {name} has {found['bytes']:,} bytes where export wrote "
                f"{expected['bytes']:,} (truncated or replaced): {_redo(path)}"
            )
        if found["sha256"] != expected["sha256"]:
            raise UserError(
                f"bundle {path}: {name} is damaged (its sha256 differs from the one export "
                f"recorded): {_redo(path)}"
            )
    return None


def read_file(path: str, name: str, parse):
    """parse(the bytes of the bundle's file `name`); UserError when they do not parse (a file
    damaged in a bundle exported without digests)."""
    with open(os.path.join(path, name), "rb") as f:
        data = f.read()
    try:
        return parse(data)
    except Exception as e:  # any parser failure on these bytes means the file is damaged
        raise UserError(
            f"bundle {path}: {name} cannot be read ({_one_line(e)}): {_redo(path)}"
        ) from None


def example_inputs(predictor, bucket: int) -> dict:
    """{name: ShapeDtypeStruct [bucket, ...]}: the inputs the forward of `predictor` (whose
    record gives image_size and channels) takes for a batch of `bucket`."""
    size, channels = predictor.image_size, predictor.record["channels"]
    example, _ = predictor.preprocess([np.zeros((size, size, channels), np.uint8)])
    return {k: jax.ShapeDtypeStruct((bucket, *v.shape[1:]), v.dtype) for k, v in example.items()}


def _aval(x) -> str:
    return f"{np.dtype(x.dtype).name}{list(x.shape)}"


def _key(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def check_program(path: str, name: str, exported, args: tuple, sources: tuple) -> None:
    """UserError unless the exported program `name` takes `args` (pytrees of arrays or
    ShapeDtypeStructs: the bundle's weights and the inputs its metadata implies) with their
    structure, shapes and dtypes. sources: what gives each of `args`, for the message (e.g.
    "weights.msgpack holds")."""
    leaves, tree = jax.tree_util.tree_flatten_with_path((args, {}))
    if tree != exported.in_tree:
        wanted = exported.in_tree.children()[0].children()
        for arg, want, source in zip(args, wanted, sources, strict=False):
            got = jax.tree.structure(arg)
            if got != want:
                raise UserError(
                    f"bundle {path}: {source} {got.num_leaves} arrays where {name} takes "
                    f"{want.num_leaves}, or others (another model's?): {_redo(path)}"
                )
        raise UserError(f"bundle {path}: {name} takes other arguments: {_redo(path)}")
    for (key, leaf), aval in zip(leaves, exported.in_avals, strict=True):
        if tuple(np.shape(leaf)) != tuple(aval.shape) or np.dtype(leaf.dtype) != aval.dtype:
            what = _key(key[2:]) or "images"  # key: ((args, kwargs) index, arg index, ...)
            raise UserError(
                f"bundle {path}: {sources[key[1].idx]} {what} as {_aval(leaf)}, but {name} "
                f"takes {_aval(aval)}: {_redo(path)}"
            )


def check_outputs(path: str, name: str, exported, class_names: list) -> None:
    """UserError when the program's class probabilities ("probs") have another number of
    columns than metadata.json names classes."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        jax.tree.unflatten(exported.out_tree, exported.out_avals)
    )
    for key, aval in leaves:
        if _key(key) == "probs" and aval.shape[-1] != len(class_names):
            raise UserError(
                f"bundle {path}: metadata.json names {len(class_names)} classes, {name} "
                f"answers {aval.shape[-1]}: {_redo(path)}"
            )
