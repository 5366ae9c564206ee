"""A damaged or mismatched bundle is refused when it loads, with one line that names the file
(never a traceback, never a server that cannot become ready); one exported before the file
digests loads with a note; a server whose model cannot compile exits with its error."""

import json
import os
import shutil
import socket
import threading

import flax.serialization
import numpy as np
import pytest

from jaxvision import bundle
from jaxvision.bundle_checks import digest
from jaxvision.errors import UserError
from jaxvision.predictor import read_record
from jaxvision.serving import app
from tests.experiments.helpers import run_tool
from tests.serving.helpers import digits


def _copy(source: str, folder) -> str:
    out = str(folder / "bundle")
    shutil.copytree(source, out)
    return out


def _edit_metadata(path: str, change) -> None:
    with open(os.path.join(path, "metadata.json")) as f:
        metadata = json.load(f)
    change(metadata)
    with open(os.path.join(path, "metadata.json"), "w") as f:
        json.dump(metadata, f)


def _truncate(path, name="weights.msgpack"):
    file = os.path.join(path, name)
    with open(file, "rb") as f:
        data = f.read()
    with open(file, "wb") as f:
        f.write(data[: len(data) // 2])


def _randomize(path, name="forward_2.jaxexport"):
    file = os.path.join(path, name)
    size = os.path.getsize(file)
    with open(file, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))


def _flip_bytes(path, name="weights.msgpack"):
    file = os.path.join(path, name)
    with open(file, "rb") as f:
        data = bytearray(f.read())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    with open(file, "wb") as f:
        f.write(data)


def _wrong_kernel(path):
    """conv1's kernel for two input channels, with a digest that matches the new file."""
    file = os.path.join(path, "weights.msgpack")
    with open(file, "rb") as f:
        weights = flax.serialization.msgpack_restore(f.read())
    weights["params"]["conv1"]["kernel"] = np.zeros((3, 3, 2, 32), np.float32)
    with open(file, "wb") as f:
        f.write(flax.serialization.msgpack_serialize(weights))
    _edit_metadata(path, lambda m: m["files"].update({"weights.msgpack": digest(file)}))


def _malformed_json(path):
    with open(os.path.join(path, "metadata.json"), "r+") as f:
        f.truncate(100)


def _set_model(key, value):
    return lambda path: _edit_metadata(path, lambda m: m["model"].update({key: value}))


def _without(key):
    return lambda path: _edit_metadata(path, lambda m: m.pop(key))


# damage -> the message bundle.load gives (after "bundle {path}" / "{path}/metadata.json").
DAMAGED = {
    "truncated weights": (
        _truncate,
        ": weights.msgpack has {half:,} bytes where export wrote {whole:,} (truncated or replaced)",
    ),
    "random program": (
        _randomize,
        ": forward_2.jaxexport is damaged (its sha256 differs from the one export recorded)",
    ),
    "flipped weight bytes": (
        _flip_bytes,
        ": weights.msgpack is damaged (its sha256 differs from the one export recorded)",
    ),
    "missing program": (
        lambda path: os.remove(os.path.join(path, "explain_4.jaxexport")),
        " has no explain_4.jaxexport",
    ),
    "malformed metadata": (
        _malformed_json,
        "/metadata.json is not valid JSON (Unterminated string starting at: line 6 column 5 "
        "(char 91))",
    ),
    "metadata without buckets": (_without("buckets"), "/metadata.json has no buckets"),
    "image size as text": (
        _set_model("image_size", "8"),
        '/metadata.json: model.image_size is "8", not a whole number of pixels of at least 1',
    ),
    "image size 32 for an 8-px export": (
        _set_model("image_size", 32),
        ": metadata.json's image_size 32 and channels 1 give images as uint8[1, 32, 32, 1], "
        "but forward_1.jaxexport takes uint8[1, 8, 8, 1]",
    ),
    "three channels": (
        _set_model("channels", 3),
        ": metadata.json's image_size 8 and channels 3 give images as uint8[1, 8, 8, 3], but "
        "forward_1.jaxexport takes uint8[1, 8, 8, 1]",
    ),
    "weights of the wrong shape": (
        _wrong_kernel,
        ": weights.msgpack holds params/conv1/kernel as float32[3, 3, 2, 32], but "
        "forward_1.jaxexport takes float32[3, 3, 1, 32]",
    ),
    "five class names for ten classes": (
        _set_model("class_names", list("01234")),
        ": metadata.json names 5 classes, forward_1.jaxexport answers 10",
    ),
    "buckets that skip one": (
        lambda path: _edit_metadata(path, lambda m: m.update(buckets=[1, 2, 8])),
        "/metadata.json: buckets [1, 2, 8] are not [1, 2, 4, 8]",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_or_mismatched_bundle_is_refused_with_one_line(digits_bundle, tmp_path, case):
    damage, message = DAMAGED[case]
    path = _copy(digits_bundle, tmp_path)
    whole = os.path.getsize(os.path.join(path, "weights.msgpack"))
    message = message.format(half=whole // 2, whole=whole)
    damage(path)
    where = f"bundle {path}" if message.startswith((":", " ")) else path
    again = f": copy the bundle {path} again whole, or export it again"
    with pytest.raises(UserError) as raised:
        bundle.load(path)
    assert str(raised.value) == where + message + again
    assert "\n" not in str(raised.value)


@pytest.mark.slow  # a jaxvision process: about 10 s
def test_serve_refuses_a_mismatched_bundle_before_it_starts(digits_bundle, tmp_path):
    path = _copy(digits_bundle, tmp_path)
    _set_model("image_size", 32)(path)
    result = run_tool("serve", f"--bundle={path}", "--port=0", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: bundle {path}: metadata.json's image_size 32 and channels 1 give images as "
        "uint8[1, 32, 32, 1], but forward_1.jaxexport takes uint8[1, 8, 8, 1]: copy the bundle "
        f"{path} again whole, or export it again"
    )


def test_a_bundle_without_digests_loads_with_a_note(digits_bundle, tmp_path, capsys):
    """Bundles exported before the digests: checked for what can be (the weights and inputs
    against the programs, each file readable), loaded with a note."""
    path = _copy(digits_bundle, tmp_path)
    _without("files")(path)
    images = digits(3)
    np.testing.assert_array_equal(
        bundle.load(path).predict(images)["probs"],
        bundle.load(digits_bundle).predict(images)["probs"],
    )
    assert capsys.readouterr().err.splitlines() == [
        f"note: bundle {path} has no file digests (exported by an older jaxvision): damage to "
        "its files cannot be told; export it again to have them checked"
    ]
    _truncate(path)
    with pytest.raises(UserError, match=r"weights.msgpack cannot be read \(ValueError: Unpack"):
        bundle.load(path)


class _Uncompilable:
    """A predictor whose warm-up fails, as a model too large for its device would."""

    image_size, record, class_names, kind = 4, {"channels": 1}, ["a"], "classification"

    def buckets(self):
        return [1]

    def predict(self, images):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\nwhile compiling")


def test_a_server_whose_model_cannot_compile_stops_with_the_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    failure = []
    thread = threading.Thread(
        target=lambda: failure.append(
            app.run(_Uncompilable(), {}, app.Limits(), host="127.0.0.1", port=port)
        )
    )
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()  # it stopped by itself
    assert failure == [
        "the model cannot be served: compiling its batch buckets failed (RuntimeError: "
        "RESOURCE_EXHAUSTED: out of memory while compiling)"
    ]


def test_export_reads_a_workdir_a_kill_left_behind(digits_run, tmp_path):
    """metrics.jsonl's last line cut short (a kill mid-write): the bundle records the last
    complete evaluation; model.json cut short: one line that says what to do."""
    workdir = tmp_path / "run"
    shutil.copytree(digits_run[0], workdir)
    metrics = (workdir / "metrics.jsonl").read_text()
    last = json.loads(metrics.splitlines()[-1])
    assert "eval/top1" in last
    (workdir / "metrics.jsonl").write_text(metrics + metrics.splitlines()[-1][:30])
    assert bundle.last_eval(str(workdir)) == last  # was a JSONDecodeError traceback
    record = (workdir / "model.json").read_text()
    (workdir / "model.json").write_text(record[:60])
    with pytest.raises(UserError) as raised:
        read_record(str(workdir))  # what export, serve --workdir and evaluate read first
    assert str(raised.value) == (
        f"{workdir}/model.json is not valid JSON (Unterminated string starting at: line 4 "
        "column 2 (char 54)): rerun the run's training command once (it writes model.json "
        "again and changes nothing else)"
    )
