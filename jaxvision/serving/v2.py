"""The Open Inference Protocol v2 over REST (Triton's, KServe's, Seldon's), with the binary
tensor data extension, and TF Serving's REST predict form.

  GET  /v2/health/live, /v2/health/ready      200 (ready: once every model is compiled; 503 before)
  GET  /v2                                    the server: name, version, extensions
  GET  /v2/models/NAME[/versions/V]           the model: versions, platform, inputs, outputs
  GET  /v2/models/NAME[/versions/V]/ready     200 once that model is compiled
  POST /v2/models/NAME[/versions/V]/infer     one input "images": BYTES [N] (one encoded image
                                              file per element; base64 strings in JSON) or
                                              UINT8 [N, H, W, C] pixels
  POST /v1/models/NAME[/versions/V]:predict   {"instances": [<base64 or {"b64": ...}>, ...]}
                                              -> {"predictions": [...]}

The outputs are the Predictor's: a classifier's "probs" (FP32 [N, classes]); a detector's padded
"boxes", "scores", "classes" and "valid" (and "valid_count", INT32 [N]). Binary tensors (the
`Inference-Header-Content-Length` header, `binary_data_size`, `binary_data`,
`binary_data_output`) are little-endian, row major; a BYTES element is a 4-byte length and its
bytes. Errors are {"error": "..."}: 400 for a bad request, 404 for a model not served.
"""

import asyncio
import base64
import binascii
import json
import struct

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import jaxvision
from jaxvision.serving.images import decode
from jaxvision.serving.models import ApiError, Limits, Model, Models, read_body, with_counts

INPUT = "images"
HEADER_LENGTH = "Inference-Header-Content-Length"


def add_routes(app: FastAPI, models: Models, limits: Limits) -> None:
    """The v2 routes and TF Serving's predict on `app`."""

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if not models.ready():
            return JSONResponse({"ready": False}, status_code=503)
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata():
        return {
            "name": "jaxvision",
            "version": jaxvision.__version__,
            "extensions": ["binary_tensor_data"],
        }

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str = ""):
        return metadata(models, models.find(name, version))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = ""):
        model = models.find(name, version)
        if not model.ready.is_set():
            return JSONResponse({"name": name, "ready": False}, status_code=503)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str = ""):
        model = models.find(name, version)

        async def work():
            model.batcher.expecting(+1)
            try:
                body = await read_body(request, limits)
                header, binary = split(body, request.headers.get(HEADER_LENGTH))
                images, wanted, binary_all = parse(header, binary, model, limits)
                images = await asyncio.to_thread(images)
            finally:
                model.batcher.expecting(-1)
            outputs = with_counts(await model.predict(images))
            return answer(model, header.get("id"), outputs, wanted, binary_all)

        return await model.respond("v2-infer", work)

    @app.post("/v1/models/{target:path}")
    async def tf_serving_predict(request: Request, target: str):
        name, colon, verb = target.rpartition(":")
        if not colon or verb != "predict":
            raise ApiError(404, f"/v1/models/{target}: only NAME:predict is served")
        name, _, version = name.partition("/versions/")
        model = models.find(name, version)

        async def work():
            instances = tf_instances(await read_body(request, limits), limits)
            images = await asyncio.to_thread(
                lambda: [_decode(data, f"instances[{i}]", model, limits) for i, data in instances]
            )
            outputs = with_counts(await model.predict(images))
            rows = range(len(images))
            return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in rows]}

        return await model.respond("tf-serving-predict", work)


def metadata(models: Models, model: Model) -> dict:
    """The protocol's model metadata: versions, platform, the input, the outputs' datatypes
    and shapes (known once the model is compiled)."""
    model.check_ready()
    return {
        "name": model.name,
        "versions": models.versions(model.name),
        "platform": "jaxvision",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": k, "datatype": datatype, "shape": [-1, *shape]}
            for k, (datatype, shape) in model.outputs.items()
        ],
        "parameters": {
            "pixels": {"datatype": "UINT8", "shape": [-1, -1, -1, model.channels]},
        },
    }


def split(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """(the JSON header, the binary data after it) of a request body."""
    if header_length is None:
        header_length = str(len(body))
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ApiError(
            400,
            f"{HEADER_LENGTH}: {header_length!r} is not a byte count within the body's "
            f"{len(body)} bytes",
        )
    size = int(header_length)
    try:
        header = json.loads(body[:size])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the inference request's JSON header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ApiError(400, "the inference request must be a JSON object")
    return header, body[size:]


def parse(header: dict, binary: bytes, model: Model, limits: Limits):
    """(a function decoding the request's images, the outputs asked for as {name: binary?},
    whether every output is to be binary); ApiError 400 for a malformed request."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(400, f'give one input, "{INPUT}": BYTES [N] or UINT8 [N, H, W, C]')
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise ApiError(
            400, f"unknown input {tensor.get('name')!r}: this model's input is {INPUT!r}"
        )
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ApiError(400, f"input {INPUT!r}: shape must be a list of sizes, not {shape!r}")
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size != len(binary):
            raise ApiError(
                400,
                f"input {INPUT!r}: binary_data_size {size!r} is not the {len(binary)} bytes after "
                "the JSON header",
            )
        data = binary
    elif binary:
        raise ApiError(400, f"{len(binary)} bytes after the JSON header, but no binary_data_size")
    elif "data" not in tensor:
        raise ApiError(400, f"input {INPUT!r} has no data (nor binary_data_size)")
    else:
        data = tensor["data"]
    count = shape[0] if shape else 0
    if count < 1:
        raise ApiError(400, f"input {INPUT!r}: no images (shape {shape})")
    if count > limits.max_images:
        raise ApiError(413, f"{count} images, over the limit of {limits.max_images}")
    if datatype == "BYTES":
        files = _bytes(data, shape, size is not None)
        images = lambda: [  # noqa: E731
            _decode(item, f"{INPUT}[{i}]", model, limits) for i, item in enumerate(files)
        ]
    elif datatype == "UINT8":
        pixels = _pixels(data, shape, size is not None, model.channels, limits)
        images = lambda: list(pixels)  # noqa: E731
    else:
        raise ApiError(
            400, f"input {INPUT!r}: datatype {datatype!r}: send BYTES (encoded images) or UINT8"
        )
    return images, *_wanted(header, model)


def _bytes(data, shape: list, binary: bool) -> list[bytes]:
    if len(shape) != 1:
        raise ApiError(400, f"a BYTES input has shape [N] (one encoded image each), not {shape}")
    if binary:
        items, at = [], 0
        while at < len(data):
            if at + 4 > len(data):
                raise ApiError(400, "the BYTES data ends inside an element's 4-byte length")
            (length,) = struct.unpack_from("<I", data, at)
            if at + 4 + length > len(data):
                raise ApiError(400, "the BYTES data ends inside an element")
            items.append(bytes(data[at + 4 : at + 4 + length]))
            at += 4 + length
    else:
        if not isinstance(data, list):
            raise ApiError(400, "a BYTES input's JSON data is a list of base64 strings")
        items = []
        for i, text in enumerate(np.ravel(np.asarray(data, dtype=object)).tolist()):
            try:
                items.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError, TypeError):
                raise ApiError(400, f"{INPUT}[{i}] is not base64 (JSON BYTES are base64)") from None
    if len(items) != shape[0]:
        raise ApiError(400, f"shape {shape} but {len(items)} elements")
    return items


def _pixels(data, shape: list, binary: bool, channels: int, limits: Limits) -> np.ndarray:
    if len(shape) != 4 or shape[3] != channels or shape[1] * shape[2] == 0:
        raise ApiError(
            400,
            f"a UINT8 input has shape [N, H, W, {channels}] (this model's channels), not {shape}",
        )
    if shape[1] * shape[2] > limits.max_pixels:
        raise ApiError(
            413, f"{shape[1]}x{shape[2]} pixels, over the server's limit of {limits.max_pixels:,}"
        )
    expected = int(np.prod(shape))
    if binary:
        if len(data) != expected:
            raise ApiError(400, f"shape {shape} holds {expected} bytes, not {len(data)}")
        return np.frombuffer(data, np.uint8).reshape(shape)
    try:
        values = np.asarray(data, dtype=np.int64).ravel()
    except (ValueError, TypeError):
        raise ApiError(400, "a UINT8 input's JSON data is a list of whole numbers") from None
    if values.size != expected:
        raise ApiError(400, f"shape {shape} holds {expected} values, not {values.size}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ApiError(400, "UINT8 values are 0 to 255")
    return values.astype(np.uint8).reshape(shape)


def _decode(data: bytes, name: str, model: Model, limits: Limits) -> np.ndarray:
    return decode(data, channels=model.channels, max_pixels=limits.max_pixels, name=name)


def _wanted(header: dict, model: Model) -> tuple[dict | None, bool]:
    """({output: binary?} asked for, or None for all; whether all are binary by default)."""
    parameters = header.get("parameters") or {}
    binary_all = bool(parameters.get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is None:
        return None, binary_all
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ApiError(400, '"outputs" must be a list of {"name": ...}')
    wanted = {}
    for output in outputs:
        name = output.get("name")
        if name not in model.outputs:
            raise ApiError(
                400, f"unknown output {name!r}: this model's are {', '.join(model.outputs)}"
            )
        wanted[name] = bool((output.get("parameters") or {}).get("binary_data", binary_all))
    return wanted, binary_all


def answer(model: Model, request_id, outputs: dict, wanted: dict | None, binary_all: bool):
    """The protocol's inference response: JSON, or JSON then the binary outputs."""
    if wanted is None:
        wanted = {name: binary_all for name in outputs}
    described, chunks = [], []
    for name, binary in wanted.items():
        array = np.ascontiguousarray(outputs[name])
        datatype = model.outputs[name][0]
        item = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = array.ravel().tolist()
        described.append(item)
    body = {"model_name": model.name, "model_version": model.version, "outputs": described}
    if request_id is not None:
        body["id"] = request_id
    if not chunks:
        return body
    head = json.dumps(body).encode()
    return Response(
        head + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def tf_instances(body: bytes, limits: Limits) -> list[tuple[int, bytes]]:
    """TF Serving's {"instances": [...]}: each a base64 string or {"b64": "..."}."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, 'send {"instances": ["<base64>" or {"b64": "<base64>"}, ...]}')
    if len(instances) > limits.max_images:
        raise ApiError(413, f"{len(instances)} images, over the limit of {limits.max_images}")
    decoded = []
    for i, item in enumerate(instances):
        text = item.get("b64") if isinstance(item, dict) else item
        try:
            decoded.append((i, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError, TypeError):
            raise ApiError(400, f"instances[{i}] is not a base64 encoded image") from None
    return decoded
