"""The Open Inference Protocol v2 (and TF Serving's predict) of a real server of several models:
JSON and binary (built here byte by byte, as the binary tensor data extension lays it out)
requests answer the bundle's numbers; the /v1 routes pick a model by ?model=; every bad request
gets the protocol's status and {"error": ...}."""

import base64
import json
import re
import struct

import numpy as np
import pytest
import requests

from jaxvision import bundle
from jaxvision.commands import serve
from jaxvision.errors import UserError
from tests.serving.helpers import digits, png

HEADER = "Inference-Header-Content-Length"


def binary_request(header: dict, chunks: list[bytes]) -> tuple[bytes, dict]:
    """A binary request body (the JSON header, then each input's bytes) and its headers."""
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {HEADER: str(len(head))}


def bytes_tensor(items: list[bytes]) -> bytes:
    """A BYTES tensor's binary form: each element as a 4-byte little-endian length, then it."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def read_binary(answer: requests.Response) -> dict:
    """{name: numpy array} of a response with binary outputs, read by hand."""
    size = int(answer.headers[HEADER])
    header, rest = json.loads(answer.content[:size]), answer.content[size:]
    dtypes = {"FP32": "<f4", "INT32": "<i4", "BOOL": "?", "INT64": "<i8"}
    arrays, at = {}, 0
    for output in header["outputs"]:
        length = output["parameters"]["binary_data_size"]
        raw = rest[at : at + length]
        arrays[output["name"]] = np.frombuffer(raw, dtypes[output["datatype"]]).reshape(
            output["shape"]
        )
        at += length
    assert at == len(rest)
    return arrays


def test_health_and_metadata(models_server, server):
    url, _, _ = models_server
    assert requests.get(f"{url}/v2/health/live", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{url}/v2", timeout=5).json() == {
        "name": "jaxvision",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    digits_meta = requests.get(f"{url}/v2/models/digits", timeout=5).json()
    assert digits_meta == {
        "name": "digits",
        "versions": ["1", "2"],
        "platform": "jaxvision",
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}],
        "parameters": {"pixels": {"datatype": "UINT8", "shape": [-1, -1, -1, 1]}},
    }
    assert requests.get(f"{url}/v2/models/digits/versions/2", timeout=5).json() == digits_meta
    shapes = requests.get(f"{url}/v2/models/shapes", timeout=5).json()
    assert [(o["name"], o["datatype"], o["shape"]) for o in shapes["outputs"]] == [
        # The session's tiny shapes detector keeps 20 detections per image (TINY_SHAPES).
        ("boxes", "FP32", [-1, 20, 4]),
        ("classes", "INT32", [-1, 20]),
        ("scores", "FP32", [-1, 20]),
        ("valid", "BOOL", [-1, 20]),
        ("valid_count", "INT32", [-1]),
    ]
    ready = requests.get(f"{url}/v2/models/digits/versions/1/ready", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"name": "digits", "ready": True}
    # One plain --bundle: served as "model", version "1".
    single, _ = server
    assert requests.get(f"{single}/v2/models/model", timeout=5).json()["versions"] == ["1"]


def test_json_and_binary_inference_equal_the_bundle(models_server):
    url, path, _ = models_server
    images = digits(3, seed=7)
    expected = bundle.load(path).predict(images)["probs"]
    encoded = [png(image) for image in images]
    # JSON: BYTES as base64 strings; the answer in JSON, flat, with its shape.
    body = {
        "id": "r1",
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [3],
                "data": [base64.b64encode(e).decode() for e in encoded],
            }
        ],
    }
    answer = requests.post(f"{url}/v2/models/digits/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert (got["model_name"], got["model_version"], got["id"]) == ("digits", "2", "r1")
    [output] = got["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probs", "FP32", [3, 10])
    np.testing.assert_array_equal(np.float32(output["data"]).reshape(3, 10), expected)

    # Binary: BYTES in, the probabilities out as binary (asked for by binary_data).
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(bytes_tensor(encoded))},
            }
        ],
        "outputs": [{"name": "probs", "parameters": {"binary_data": True}}],
    }
    data, headers = binary_request(header, [bytes_tensor(encoded)])
    answer = requests.post(
        f"{url}/v2/models/digits/versions/1/infer", data=data, headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(read_binary(answer)["probs"], expected)

    # UINT8 pixels [N, H, W, C], binary in, JSON out; and in JSON.
    same = np.stack(digits(2, seed=8)[:1] * 2)  # two equal-sized images
    same[1] = 255 - same[1]
    pixels = bundle.load(path).predict(list(same))["probs"]
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(same.shape),
                "parameters": {"binary_data_size": same.nbytes},
            }
        ]
    }
    data, headers = binary_request(header, [same.tobytes()])
    answer = requests.post(f"{url}/v2/models/digits/infer", data=data, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(np.float32(answer.json()["outputs"][0]["data"]), pixels.ravel())
    body = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(same.shape),
                "data": same.tolist(),
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    answer = requests.post(f"{url}/v2/models/digits/infer", json=body, timeout=30)
    np.testing.assert_array_equal(read_binary(answer)["probs"], pixels)


def test_a_detector_answers_padded_boxes(models_server):
    url, _, path = models_server
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    expected = bundle.load(path).predict(list(images))
    header = {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(images.shape),
                "parameters": {"binary_data_size": images.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    data, headers = binary_request(header, [images.tobytes()])
    answer = requests.post(f"{url}/v2/models/shapes/infer", data=data, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    got = read_binary(answer)
    for name in ("boxes", "scores", "classes", "valid"):
        np.testing.assert_array_equal(got[name], expected[name])
    np.testing.assert_array_equal(got["valid_count"], expected["valid"].sum(1))


def test_several_models_share_a_server(models_server):
    url, path, _ = models_server
    files = [("image", ("d.png", png(digits(1)[0]), "image/png"))]
    answer = requests.post(f"{url}/v1/predict", files=files, timeout=30)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "several models are served (digits@1, digits@2, shapes@1): "
        "add ?model=NAME[@VERSION]"
    }
    answer = requests.post(f"{url}/v1/predict?model=digits@2&top_k=1", files=files, timeout=30)
    expected = bundle.load(path).predict(digits(1))["probs"][0]
    assert answer.json()["predictions"][0]["labels"][0]["index"] == int(np.argmax(expected))
    answer = requests.post(f"{url}/v1/predict?model=nope", files=files, timeout=30)
    assert answer.status_code == 404
    assert answer.json() == {"error": "no model 'nope' is served here (served: digits, shapes)"}
    meta = requests.get(f"{url}/v1/metadata?model=shapes", timeout=5).json()
    assert meta["model"]["task"] == "detection"
    # TF Serving's predict: instances in, predictions out.
    body = {"instances": [{"b64": base64.b64encode(png(digits(1)[0])).decode()}]}
    answer = requests.post(f"{url}/v1/models/digits:predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"][0]["probs"], expected, rtol=1e-6)
    # The web page's own requests are counted apart from other clients'.
    page = {"X-Jaxvision-Page": "1"}
    answer = requests.post(f"{url}/v1/predict?model=shapes", files=files, headers=page, timeout=30)
    assert answer.status_code == 200, answer.text
    # The metrics count each model and endpoint apart.
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    for labels in (
        'endpoint="predict",model="digits",status="200",version="2"',
        'endpoint="tf-serving-predict",model="digits",status="200",version="2"',
        'endpoint="v2-infer",model="digits",status="200",version="1"',
        'endpoint="v2-infer",model="shapes",status="200",version="1"',
        'endpoint="page",model="shapes",status="200",version="1"',
    ):
        assert re.search(rf"^jaxvision_requests_total\{{{labels}\}} [1-9]", metrics, re.M), labels


def _bytes_input(shape, **extra):
    return {"inputs": [{"name": "images", "datatype": "BYTES", "shape": shape, **extra}]}


_B64 = base64.b64encode(png(digits(1)[0])).decode()

BAD = {
    "unknown model": ("GET", "/v2/models/nope", {}, 404),
    "unknown version": ("GET", "/v2/models/digits/versions/9", {}, 404),
    "infer on an unknown model": ("POST", "/v2/models/nope/infer", {"json": {}}, 404),
    "not json": ("POST", "/v2/models/digits/infer", {"data": b"{oops"}, 400),
    "no inputs": ("POST", "/v2/models/digits/infer", {"json": {"inputs": []}}, 400),
    "wrong input name": (
        "POST",
        "/v2/models/digits/infer",
        {"json": {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [_B64]}]}},
        400,
    ),
    "FP32 input": (
        "POST",
        "/v2/models/digits/infer",
        {"json": {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [1]}]}},
        400,
    ),
    "not base64": ("POST", "/v2/models/digits/infer", {"json": _bytes_input([1], data=["*"])}, 400),
    "shape and data disagree": (
        "POST",
        "/v2/models/digits/infer",
        {"json": _bytes_input([2], data=[_B64])},
        400,
    ),
    "unknown output": (
        "POST",
        "/v2/models/digits/infer",
        {"json": {**_bytes_input([1], data=[_B64]), "outputs": [{"name": "logits"}]}},
        400,
    ),
    "header length past the body": (
        "POST",
        "/v2/models/digits/infer",
        {"data": b"{}", "headers": {HEADER: "99"}},
        400,
    ),
    "binary_data_size not the bytes sent": (
        "POST",
        "/v2/models/digits/infer",
        {"json": _bytes_input([1], parameters={"binary_data_size": 10})},
        400,
    ),
    "too many images": (
        "POST",
        "/v2/models/digits/infer",
        {"json": _bytes_input([5], data=[_B64] * 5)},
        413,
    ),
    "not an image": (
        "POST",
        "/v2/models/digits/infer",
        {"json": _bytes_input([1], data=[base64.b64encode(b"hello").decode()])},
        415,
    ),
    "tf serving without instances": ("POST", "/v1/models/digits:predict", {"json": {}}, 400),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_get_the_protocols_status(models_server, case):
    url, _, _ = models_server
    method, route, kwargs, status = BAD[case]
    answer = requests.request(method, f"{url}{route}", timeout=30, **kwargs)
    assert answer.status_code == status, (case, answer.text)
    assert list(answer.json()) == ["error"] and answer.json()["error"]


def test_bundle_flags_name_models_and_a_malformed_one_is_one_line():
    assert serve.parse_bundle("/b") == ("model", "1", "/b")
    assert serve.parse_bundle("digits=/b") == ("digits", "1", "/b")
    assert serve.parse_bundle("digits@2=/b=c") == ("digits", "2", "/b=c")
    with pytest.raises(UserError) as raised:
        serve.parse_bundle("digits@two=/nowhere")
    assert str(raised.value) == (
        "--bundle=digits@two=/nowhere: give BUNDLE, NAME=BUNDLE or NAME@VERSION=BUNDLE "
        "(a name of letters, digits, '_', '.' or '-'; a whole-number version)"
    )
    with pytest.raises(UserError, match=r"^--bundle=digits=: give the bundle's path after '='$"):
        serve.parse_bundle("digits=")
