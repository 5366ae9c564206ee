"""NVIDIA's own client, tritonclient[http], unchanged against a real jaxvision server: readiness,
metadata and inference with binary and JSON tensors give the bundles' numbers.

tritonclient pins an older ml-dtypes than jax needs, so it lives in a venv of its own, made
here (once per test session) with pip from the package index; the client runs there as a
script and hands its answers back in a .npz."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxvision import bundle
from tests.serving.helpers import digits, png

CLIENT = r"""
import base64, json, sys
import numpy as np
import tritonclient.http as http

url, folder = sys.argv[1], sys.argv[2]
client = http.InferenceServerClient(url.removeprefix("http://"))
encoded = [open(f"{folder}/{i}.png", "rb").read() for i in range(3)]
pixels = np.load(f"{folder}/pixels.npy")
boxes_in = np.load(f"{folder}/shapes.npy")
facts = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready("digits", "2"),
    "server": client.get_server_metadata(),
    "metadata": client.get_model_metadata("digits"),
    "metadata_v1": client.get_model_metadata("digits", "1"),
}
json.dump(facts, open(f"{folder}/facts.json", "w"))


def infer(model, array, datatype, binary_in, outputs=None):
    tensor = http.InferInput("images", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary_in)
    return client.infer(model, [tensor], outputs=outputs)


wanted = lambda binary: [http.InferRequestedOutput("probs", binary_data=binary)]
results = {}
files = np.array(encoded, dtype=np.object_)
results["bytes_binary"] = infer("digits", files, "BYTES", True, wanted(True)).as_numpy("probs")
texts = np.array([base64.b64encode(e) for e in encoded], dtype=np.object_)
results["bytes_json"] = infer("digits", texts, "BYTES", False, wanted(False)).as_numpy("probs")
results["pixels_json"] = infer("digits", pixels, "UINT8", False, wanted(False)).as_numpy("probs")
answer = infer("shapes", boxes_in, "UINT8", True)  # every output, binary: the client's default
for name in ("boxes", "scores", "classes", "valid", "valid_count"):
    results[f"shapes_{name}"] = answer.as_numpy(name)
np.savez(f"{folder}/results.npz", **results)
"""


@pytest.fixture(scope="session")
def triton_python(session_cache):
    """The python of a venv with tritonclient's HTTP client (never the project's venv).

    What `tritonclient[http]` installs less aiohttp (its asyncio client, unused here): the
    package, geventhttpclient and the greenlet bound the extra sets. The venv is made without
    pip (the project's pip installs into it) and nothing is byte-compiled: ~25 s instead of
    ~100 s for the plain venv + `pip install tritonclient[http]` (2 busy cores)."""

    def build(folder):
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=300
        )
        python = os.path.join(folder, "bin", "python")
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile"]
            + ["--disable-pip-version-check", "tritonclient", "geventhttpclient", "greenlet<3.4"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if pip.returncode != 0:
            pytest.fail(
                "pip could not install tritonclient's HTTP client into a venv of its own (this "
                f"test needs the package index):\n{pip.stderr[-2000:]}"
            )
        return python

    return session_cache.get("tritonclient_venv", build)[1]


@pytest.mark.slow
def test_tritonclient_drives_the_server_unchanged(models_server, triton_python, tmp_path):
    url, digits_path, shapes_path = models_server
    images = digits(3, seed=11)
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(png(image))
    pixels = np.stack([images[0], 255 - images[0]])
    np.save(tmp_path / "pixels.npy", pixels)
    boxes_in = np.random.default_rng(4).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    np.save(tmp_path / "shapes.npy", boxes_in)
    (tmp_path / "client.py").write_text(CLIENT)
    run = subprocess.run(
        [triton_python, str(tmp_path / "client.py"), url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["live"] and facts["ready"] and facts["model_ready"]
    assert facts["server"]["extensions"] == ["binary_tensor_data"]
    assert facts["metadata"]["versions"] == ["1", "2"]
    assert facts["metadata"]["outputs"] == [
        {"name": "probs", "datatype": "FP32", "shape": [-1, 10]}
    ]
    assert facts["metadata_v1"] == facts["metadata"]

    results = np.load(tmp_path / "results.npz")
    classifier = bundle.load(digits_path)
    expected = classifier.predict(images)["probs"]
    np.testing.assert_array_equal(results["bytes_binary"], expected)
    np.testing.assert_array_equal(results["bytes_json"], expected)
    np.testing.assert_array_equal(results["pixels_json"], classifier.predict(list(pixels))["probs"])
    detected = bundle.load(shapes_path).predict(list(boxes_in))
    for name in ("boxes", "scores", "classes", "valid"):
        np.testing.assert_array_equal(results[f"shapes_{name}"], detected[name])
    np.testing.assert_array_equal(results["shapes_valid_count"], detected["valid"].sum(1))
