"""A real server process on localhost (experiments.serve on a bundle of a tiny digits run):
answers equal the bundle's predictions, concurrent requests share batches in order, and every
bad input gets its 4xx while the next good request still succeeds."""

import base64
import io
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from experiments.classification import train_and_evaluate
from jaxvision import bundle
from tests.experiments.helpers import ROOT, load_config, python_env, run_module

TINY = dict(image_size=8, pad=1, total_steps=20, log_every_steps=10, checkpoint_every_steps=0)


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(out, "PNG")
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, bundle path): a served bundle, ready (every bucket compiled)."""
    root = tmp_path_factory.mktemp("serve")
    workdir, out = str(root / "run"), str(root / "bundle")
    train_and_evaluate(load_config("digits.py", **TINY), workdir)
    run_module(
        "experiments.export", f"--workdir={workdir}", f"--out={out}", "--max_batch=8", check=True
    )
    port = _free_port()
    flags = ["--max_batch_size=8", "--max_delay_ms=30", "--max_images=4"]
    flags += ["--max_body_mb=0.25", "--max_pixels=250000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.serve", f"--bundle={out}", f"--port={port}", *flags],
        cwd=ROOT,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not become ready:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.2)
    yield url, out
    process.terminate()
    process.wait(timeout=20)


def _digits(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (8 + i % 5, 8 + i % 3, 1), dtype=np.uint8) for i in range(n)]


def test_answers_equal_the_bundle_and_the_service_describes_itself(server):
    url, path = server
    images = _digits(3)
    expected = bundle.load(path).predict(images)["probs"]
    files = [("image", (f"d{i}.png", _png(im), "image/png")) for i, im in enumerate(images)]
    answer = requests.post(f"{url}/v1/predict?top_k=3", files=files, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    for probs, prediction in zip(expected, predictions, strict=True):
        labels = prediction["labels"]
        assert [label["index"] for label in labels] == list(np.argsort(-probs, kind="stable")[:3])
        assert [np.float32(label["probability"]) for label in labels] == sorted(probs)[::-1][:3]
    # JSON with base64 gives the same answer.
    body = {"images": [base64.b64encode(_png(im)).decode() for im in images]}
    assert requests.post(f"{url}/v1/predict?top_k=3", json=body, timeout=30).json() == {
        "predictions": predictions
    }
    metadata = requests.get(f"{url}/v1/metadata", timeout=5).json()
    assert metadata["model"]["task"] == "classification" and metadata["buckets"] == [1, 2, 4, 8]
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}


def test_concurrent_requests_are_batched_in_order(server):
    url, path = server
    images = _digits(24, seed=1)
    expected = bundle.load(path).predict(images)["probs"]

    def one(i):
        files = [("image", ("d.png", _png(images[i]), "image/png"))]
        answer = requests.post(f"{url}/v1/predict?top_k=1", files=files, timeout=30)
        return answer.status_code, answer.json()["predictions"][0]["labels"][0]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(len(images))))
    for i, (status, label) in enumerate(answers):
        assert status == 200 and label["index"] == int(np.argmax(expected[i]))
        # Batched with others into another bucket: another program, equal to float rounding.
        assert label["probability"] == pytest.approx(expected[i].max(), rel=1e-5)
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    # Some device batch held more than one image (the histogram's count above its 1.0 bucket).
    count = float(re.search(r"^jaxvision_batch_size_count (\S+)", metrics, re.M).group(1))
    ones = float(re.search(r'^jaxvision_batch_size_bucket\{le="1.0"\} (\S+)', metrics, re.M)[1])
    assert count > ones
    assert re.search(r'^jaxvision_requests_total\{status="200"\} \d', metrics, re.M)


def _bomb() -> bytes:
    """A 1000 x 1000 PNG (a million pixels, a few KB): over the server's 250,000."""
    return _png(np.zeros((1000, 1000, 1), np.uint8))


_SMALL = _png(np.zeros((8, 8, 1), np.uint8))


def _file(data: bytes, name="a.png", field="image"):
    return [(field, (name, data, "image/png"))]


BAD = {
    "not an image": (dict(files=_file(b"hello")), 415),
    "truncated": (dict(files=_file(_png(np.full((64, 64, 1), 7, np.uint8))[:60])), 400),
    "unsupported content type": (dict(data=b"abc", headers={"Content-Type": "text/plain"}), 415),
    "body over the limit": (dict(files=_file(os.urandom(300_000))), 413),
    "decompression bomb": (dict(files=_file(_bomb())), 413),
    "too many images": (dict(files=_file(_SMALL) * 5), 413),
    "wrong field name": (dict(files=_file(_SMALL, field="picture")), 422),
    "no images": (dict(json={"images": []}), 422),
    "not json": (dict(data=b"{oops", headers={"Content-Type": "application/json"}), 400),
    "bad base64": (dict(json={"images": ["***"]}), 400),
    "wrong json field": (dict(json={"files": ["aGk="]}), 422),
    "bad top_k": (dict(json={"images": ["aGk="]}, params={"top_k": "-1"}), 400),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_4xx_and_the_server_stays_up(server, case):
    url, _ = server
    kwargs, status = BAD[case]
    answer = requests.post(f"{url}/v1/predict", timeout=30, **kwargs)
    assert answer.status_code == status, (case, answer.status_code, answer.text)
    assert answer.json()["error"]  # a JSON body that says what is wrong
    good = _file(_png(_digits(1)[0]))
    assert requests.post(f"{url}/v1/predict", files=good, timeout=30).status_code == 200
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert re.search(rf'^jaxvision_requests_total\{{status="{status}"\}} [1-9]', metrics, re.M)
