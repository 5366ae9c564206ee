"""A real server process on localhost (jaxvision serve on a bundle of a tiny digits run):
answers equal the bundle's predictions, concurrent requests share batches in order, and every
bad input gets its 4xx while the next good request still succeeds, and a bounded load at
concurrency 1, 8 and 32 has no errors."""

import base64
import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from experiments import detection
from jaxvision import bundle, cpu_compile
from jaxvision.data import files
from jaxvision.explain import explain
from jaxvision.predictor import Predictor
from tests.experiments.helpers import run_module
from tests.serving.helpers import digits, png


def test_answers_equal_the_bundle_and_the_service_describes_itself(server):
    url, path = server
    images = digits(3)
    expected = bundle.load(path).predict(images)["probs"]
    files = [("image", (f"d{i}.png", png(im), "image/png")) for i, im in enumerate(images)]
    answer = requests.post(f"{url}/v1/predict?top_k=3", files=files, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    for probs, prediction in zip(expected, predictions, strict=True):
        labels = prediction["labels"]
        assert [label["index"] for label in labels] == list(np.argsort(-probs, kind="stable")[:3])
        assert [np.float32(label["probability"]) for label in labels] == sorted(probs)[::-1][:3]
    # JSON with base64 gives the same answer.
    body = {"images": [base64.b64encode(png(im)).decode() for im in images]}
    assert requests.post(f"{url}/v1/predict?top_k=3", json=body, timeout=30).json() == {
        "predictions": predictions
    }
    metadata = requests.get(f"{url}/v1/metadata", timeout=5).json()
    assert metadata["model"]["task"] == "classification" and metadata["buckets"] == [1, 2, 4, 8]
    assert metadata["cpu_compile"] == {"chosen": "xla", "cpu": cpu_compile.cpu_name()}
    assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}


def test_concurrent_requests_are_batched_in_order(server):
    url, path = server
    images = digits(24, seed=1)
    expected = bundle.load(path).predict(images)["probs"]

    def one(i):
        files = [("image", ("d.png", png(images[i]), "image/png"))]
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
    model = 'model="model",version="1"'
    count = float(re.search(rf"^jaxvision_batch_size_count\{{{model}\}} (\S+)", metrics, re.M)[1])
    ones = rf'^jaxvision_batch_size_bucket\{{le="1.0",{model}\}} (\S+)'
    ones = float(re.search(ones, metrics, re.M)[1])
    assert count > ones
    labels = r'endpoint="predict",model="model",status="200",version="1"'
    assert re.search(rf"^jaxvision_requests_total\{{{labels}\}} \d", metrics, re.M)


@pytest.mark.slow
def test_a_detector_answers_boxes_in_each_images_own_pixels(detector_server):
    url, path, config = detector_server
    source = detection.open_dataset(config).test
    images = [source[0]["image"], np.asarray(Image.fromarray(source[1]["image"]).resize((96, 48)))]
    expected = bundle.load(path).predict(images)
    files = [("image", (f"s{i}.png", png(im), "image/png")) for i, im in enumerate(images)]
    answer = requests.post(f"{url}/v1/predict?model=shapes", files=files, timeout=30)
    assert answer.status_code == 200, answer.text
    names = bundle.load(path).class_names
    for i, prediction in enumerate(answer.json()["predictions"]):
        valid = expected["valid"][i]
        assert len(prediction["detections"]) == valid.sum() > 0
        for got, box, score, c in zip(
            prediction["detections"],
            expected["boxes"][i][valid],
            expected["scores"][i][valid],
            expected["classes"][i][valid],
            strict=True,
        ):
            assert got["class"] == names[c] and np.float32(got["score"]) == score
            np.testing.assert_array_equal(np.float32(got["box"]), box)
    # The second image's boxes are in its own 96 x 48 pixels.
    boxes = np.array([d["box"] for d in answer.json()["predictions"][1]["detections"]])
    assert boxes[:, [0, 2]].max() <= 96 and boxes[:, [1, 3]].max() <= 48


def test_explain_answers_gradcam_of_the_top_label(server, detector_server, digits_run):
    url, path = server
    images = digits(2, seed=3)
    files = [("image", (f"d{i}.png", png(im), "image/png")) for i, im in enumerate(images)]
    answer = requests.post(f"{url}/v1/explain", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    got = answer.json()["explanations"]
    # The bundle's exported Grad-CAM, and the library's on the workdir's model.
    expected = bundle.load(path).explainer().explain(images)
    library = explain(Predictor.from_workdir(digits_run[0]), images, method="gradcam")
    for i, item in enumerate(got):
        assert item["method"] == "gradcam" and item["layer"] == "conv1"  # 4x4; conv2 is 2x2
        assert item["index"] == int(expected["targets"][i]) == int(library.targets[i])
        heatmap = np.array(item["heatmap"], np.float32)
        assert heatmap.shape == (8, 8)  # the model's input side
        np.testing.assert_allclose(heatmap, expected["heatmaps"][i], atol=1e-4)
        np.testing.assert_allclose(heatmap, library.heatmaps[i], atol=2e-3)
        h, w = images[i].shape[:2]
        side = min(h, w)  # the digits model crops at ratio 1.0
        assert item["box"] == [(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2]
        assert item["heatmap_png"].startswith("data:image/png;base64,")
    # A detector has no explanations: a 404 that says so.
    detector_url, _, _ = detector_server
    answer = requests.post(f"{detector_url}/v1/explain?model=shapes", files=files[:1], timeout=30)
    assert answer.status_code == 404 and "no explanations" in answer.json()["error"]


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_load_at_fixed_concurrency_has_no_errors_and_right_answers(server, concurrency):
    """A bounded load: 64 requests of one image each, `concurrency` in flight at a time."""
    url, path = server
    images = digits(64, seed=concurrency)
    expected = np.argmax(bundle.load(path).predict(images)["probs"], axis=-1)
    bodies = [png(image) for image in images]

    def one(i):
        files = [("image", ("d.png", bodies[i], "image/png"))]
        answer = requests.post(f"{url}/v1/predict?top_k=1", files=files, timeout=60)
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(len(images))))
    assert [status for status, _ in answers] == [200] * len(images)
    got = [body["predictions"][0]["labels"][0]["index"] for _, body in answers]
    assert got == expected.tolist()


def _bomb() -> bytes:
    """A 1000 x 1000 PNG (a million pixels, a few KB): over the server's 250,000."""
    return png(np.zeros((1000, 1000, 1), np.uint8))


_SMALL = png(np.zeros((8, 8, 1), np.uint8))


def _file(data: bytes, name="a.png", field="image"):
    return [(field, (name, data, "image/png"))]


BAD = {
    "not an image": (dict(files=_file(b"hello")), 415),
    "truncated": (dict(files=_file(png(np.full((64, 64, 1), 7, np.uint8))[:60])), 400),
    "unsupported content type": (dict(data=b"abc", headers={"Content-Type": "text/plain"}), 415),
    "body over the limit": (dict(files=_file(os.urandom(300_000))), 413),
    "decompression bomb": (dict(files=_file(_bomb())), 413),
    "too many images": (dict(files=_file(_SMALL) * 5), 413),
    "far too many images": (dict(files=_file(_SMALL) * 100), 413),  # was starlette's 400
    "too many text fields": (dict(files=[("note", (None, "hi"))] * 6), 400),
    "multipart without a boundary": (
        dict(data=b"abc", headers={"Content-Type": "multipart/form-data"}),
        400,
    ),
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
    good = _file(png(digits(1)[0]))
    assert requests.post(f"{url}/v1/predict", files=good, timeout=30).status_code == 200
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    labels = f'endpoint="predict",model="model",status="{status}",version="1"'
    assert re.search(rf"^jaxvision_requests_total\{{{labels}\}} [1-9]", metrics, re.M)


def test_a_16_bit_png_gets_the_answer_of_trainings_decoding(server, tmp_path):
    url, path = server
    wide = np.random.default_rng(5).integers(0, 65536, (10, 9), dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    decoded = files.load_image(str(tmp_path / "wide.png"), channels=1)
    expected = bundle.load(path).predict([decoded])["probs"][0]
    data = (tmp_path / "wide.png").read_bytes()
    answer = requests.post(
        f"{url}/v1/predict?top_k=10", files=_file(data, "wide.png"), timeout=30
    ).json()
    got = {label["index"]: label["probability"] for label in answer["predictions"][0]["labels"]}
    np.testing.assert_allclose([got[i] for i in range(10)], expected, rtol=1e-5)


def test_a_client_that_leaves_mid_body_is_counted(server):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")

    def left() -> float:
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        labels = 'endpoint="predict",model="model",status="499",version="1"'
        found = re.search(rf"^jaxvision_requests_total\{{{labels}\}} (\S+)", metrics, re.M)
        return float(found[1]) if found else 0.0

    before = left()
    with socket.create_connection((host, int(port)), timeout=5) as client:
        client.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\nContent-Disp"
        )
        time.sleep(0.3)  # the server reads the first part of the body, then the client leaves
    deadline = time.monotonic() + 10
    while left() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left() == before + 1


@pytest.mark.slow
def test_serve_bench_prints_its_rows():
    """The benchmark command at tiny settings: a raw row per bucket, a server row per case,
    every answer right."""
    result = run_module(
        "benchmarks.serve",
        "--model=simple_cnn",
        "--image_size=16",
        "--requests=16",
        "--concurrency=1,4",
        "--max_batch_size=4",
        "--port=0",
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["batch"] for r in rows if r["case"] == "raw"] == [1, 2, 4]
    served = [r for r in rows if r["case"] != "raw"]
    assert [(r["case"], r["concurrency"]) for r in served] == [
        ("server max_batch_size=4", 1),
        ("server max_batch_size=4", 4),
        ("server max_batch_size=1", 1),
        ("server max_batch_size=1", 4),
    ]
    assert all(r["errors"] == 0 and r["wrong"] == 0 and r["img_s"] > 0 for r in served)
