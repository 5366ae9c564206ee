"""The HTTP service: a Predictor (from a bundle or a workdir) behind FastAPI, with dynamic
batching, readiness after every bucket is compiled, Prometheus metrics and 4xx answers for bad
input. `jaxvision serve` runs it with uvicorn.

  POST /v1/predict   multipart files in field "image" (one or many), or JSON
                     {"images": ["<base64>", ...]}; ?top_k=N for classifiers
  GET  /healthz      200 while the process is up
  GET  /readyz       200 once every batch bucket is compiled (503 before, and with the error
                     when compiling failed: `jaxvision serve` then exits with it)
  GET  /v1/metadata  the model: task, classes, input size, preprocessing, source, versions
  GET  /metrics      Prometheus: requests by status (499: the client left before its
                     request was read), latency, batch sizes, queue depth
  POST /v1/explain   the same inputs (classifiers): Grad-CAM of each image's top-1 class,
                     as a heat map [S, S] and a PNG to lay over the image's crop box
  GET  /             a web page: choose or drop an image, see the answer drawn on it
"""

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import importlib.resources
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import prometheus_client as prom
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from jaxvision.errors import UserError
from jaxvision.serving.batcher import Batcher, QueueFull
from jaxvision.serving.explanations import explanations
from jaxvision.serving.images import BadImage, decode

CLIENT_LEFT = 499  # the status /metrics counts for a client that left mid-request (nginx's)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may send, and how batches form."""

    max_batch_size: int = 32  # images per device batch
    max_delay_ms: float = 5.0  # how long the first request of a batch waits for others
    queue_size: int = 256  # requests waiting; beyond: 503
    timeout_s: float = 30.0  # per request; beyond: 504
    max_body_bytes: int = 20 * 2**20
    max_images: int = 32  # per request
    max_pixels: int = 40_000_000  # per image, from its header, before decoding
    top_k: int = 5


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def warm_up(predictor, explainer=None) -> None:
    """Compiles every batch bucket (of the explanations too), so that no request pays a
    compile."""
    size, channels = predictor.image_size, predictor.record["channels"]
    image = np.zeros((size, size, channels), np.uint8)
    for bucket in predictor.buckets():
        predictor.predict([image] * bucket)
        if explainer is not None:
            explainer.explain([image] * bucket)


def warm_up_failure(error: Exception) -> str:
    """One line for a warm-up that raised `error`: why the model cannot be served."""
    if isinstance(error, UserError):
        return str(error)
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return f"the model cannot be served: compiling its batch buckets failed ({detail})"


def create_app(
    predictor,
    metadata: dict,
    limits: Limits = Limits(),
    explainer=None,
    on_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service around `predictor` (a jaxvision Predictor or bundle); `metadata` is what
    /v1/metadata answers; `explainer` (jaxvision.explain.service.Explainer, optional) answers
    /v1/explain. Buckets compile in a background thread; /readyz says when done. When they
    cannot compile, /readyz and the predictions answer 503 with why, and `on_failure` (the
    serve command's: stop the server, exit non-zero) gets that one line."""
    registry = prom.CollectorRegistry()
    requests = prom.Counter(
        "jaxvision_requests",
        "Predict and explain requests by HTTP status.",
        ["status"],
        registry=registry,
    )
    latency = prom.Histogram(
        "jaxvision_request_seconds",
        "Predict and explain request latency (receipt to answer).",
        buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
        registry=registry,
    )
    batch_sizes = prom.Histogram(
        "jaxvision_batch_size",
        "Images per device batch.",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        registry=registry,
    )
    depth = prom.Gauge("jaxvision_queue_depth", "Requests waiting.", registry=registry)
    batcher = Batcher(
        predictor.predict,
        max_batch_size=limits.max_batch_size,
        max_delay_ms=limits.max_delay_ms,
        queue_size=limits.queue_size,
        timeout_s=limits.timeout_s,
        observe_batch=batch_sizes.observe,
        observe_queue=depth.set,
    )
    ready = threading.Event()
    page = importlib.resources.files(__package__).joinpath("page.html").read_text()

    explaining = threading.Lock()  # one explanation at a time: each is a batch's worth of work

    failure = []  # why the model cannot be served, once warming up failed

    def compile_buckets():
        try:
            warm_up(predictor, explainer)
        except Exception as e:  # any failure: the server can never become ready
            failure.append(warm_up_failure(e))
            if on_failure is not None:
                on_failure(failure[0])
            return
        ready.set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=compile_buckets, name="warm-up", daemon=True).start()
        yield
        batcher.close()

    app = FastAPI(title="jaxvision", docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if failure:
            return JSONResponse({"status": "failed", "error": failure[0]}, status_code=503)
        if not ready.is_set():
            return JSONResponse({"status": "compiling"}, status_code=503)
        return {"status": "ready"}

    @app.get("/v1/metadata")
    async def model_metadata():
        return metadata

    @app.get("/metrics")
    async def metrics():
        return Response(prom.generate_latest(registry), media_type=prom.CONTENT_TYPE_LATEST)

    async def read_images(request: Request) -> list[np.ndarray]:
        uploads = await _uploads(request, limits)
        channels = predictor.record["channels"]
        # Decoded off the event loop: other requests are read meanwhile.
        return await asyncio.to_thread(
            lambda: [
                decode(data, channels=channels, max_pixels=limits.max_pixels, name=name)
                for name, data in uploads
            ]
        )

    async def respond(work) -> Response:
        """The answer of `work()` (-> the JSON body of a 200), timed and counted; bad input
        (BadImage, ApiError) becomes its 4xx / 5xx with a JSON error."""
        start = time.perf_counter()
        try:
            status, response = 200, JSONResponse(await work())
        except (BadImage, ApiError) as e:
            status = e.status
            headers = getattr(e, "headers", None)
            response = JSONResponse({"error": e.message}, status_code=e.status, headers=headers)
        except ClientDisconnect:  # nobody to answer: counted, not a server error
            status, response = CLIENT_LEFT, Response(status_code=CLIENT_LEFT)
        except Exception:  # a bug: counted, then starlette's 500 with its traceback in the log
            requests.labels("500").inc()
            raise
        seconds = time.perf_counter() - start
        requests.labels(str(status)).inc()
        latency.observe(seconds)
        response.headers["Server-Timing"] = f"predict;dur={1000 * seconds:.2f}"
        return response

    def check_ready():
        if failure:
            raise ApiError(503, failure[0])
        if not ready.is_set():
            raise ApiError(503, "the model is still compiling", {"Retry-After": "1"})

    @app.post("/v1/predict")
    async def predict(request: Request):
        async def work():
            batcher.expecting(+1)  # a batch forming now waits for this one
            try:
                top_k = _top_k(request, limits, len(predictor.class_names))
                images = await read_images(request)
            finally:
                batcher.expecting(-1)
            check_ready()
            try:
                outputs = await batcher.submit(images)
            except QueueFull:
                raise ApiError(503, "the server is busy: retry", {"Retry-After": "1"}) from None
            except TimeoutError:
                raise ApiError(504, f"no answer within {limits.timeout_s} s") from None
            return {"predictions": predictor.answers(outputs, top_k)}

        return await respond(work)

    @app.post("/v1/explain")
    async def explain(request: Request):
        async def work():
            if explainer is None:
                raise ApiError(404, f"this {predictor.kind} model has no explanations")
            images = await read_images(request)
            check_ready()

            def run():
                with explaining:
                    return explainer.explain(images)

            outputs = await asyncio.to_thread(run)
            return {"explanations": explanations(predictor, explainer, images, outputs)}

        return await respond(work)

    return app


def run(
    predictor, metadata: dict, limits: Limits, explainer=None, *, host: str, port: int
) -> str | None:
    """Serves `predictor` (create_app) under uvicorn until the process is stopped: None; or
    until the model cannot be served (its batch buckets did not compile): that one line."""
    import uvicorn

    failed = []

    def stop(message: str) -> None:  # from the warm-up thread, while server.run() runs
        failed.append(message)
        server.should_exit = True

    service = create_app(predictor, metadata, limits, explainer=explainer, on_failure=stop)
    server = uvicorn.Server(uvicorn.Config(service, host=host, port=port, log_level="warning"))
    server.run()
    return failed[0] if failed else None


def _top_k(request: Request, limits: Limits, num_classes: int) -> int:
    raw = request.query_params.get("top_k", str(limits.top_k))
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, f"top_k={raw!r}: give a whole number of at least 1")
    return min(int(raw), num_classes)


async def _uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image the request carries; ApiError for a malformed request."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
        raise ApiError(413, f"the body is over the limit of {limits.max_body_bytes:,} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise ApiError(413, f"the body is over the limit of {limits.max_body_bytes:,} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        uploads = _json_images(body)
    elif kind == "multipart/form-data":
        request._body = body  # the form parser reads the body already received
        try:
            form = await request.form(max_files=limits.max_images + 1, max_fields=limits.max_images)
        except HTTPException as e:  # starlette's 400 {"detail": ...} for what it refuses
            if e.detail.startswith("Too many files"):
                raise ApiError(
                    413,
                    f"more than {limits.max_images} images, over the limit of {limits.max_images}",
                ) from None
            raise ApiError(400, f"the multipart body cannot be read: {e.detail}") from None
        unknown = sorted(set(form.keys()) - {"image"})
        if unknown:
            raise ApiError(422, f"unknown form fields {unknown}: send the files as 'image'")
        uploads = []
        for i, item in enumerate(form.getlist("image")):
            if isinstance(item, str):
                raise ApiError(422, "form field 'image' must be a file, not text")
            uploads.append((item.filename or f"image {i}", await item.read()))
    else:
        raise ApiError(
            415, f"content type {kind or 'none'!r}: send multipart/form-data or application/json"
        )
    if not uploads:
        raise ApiError(422, "no images: send one or more as 'image' files or JSON 'images'")
    if len(uploads) > limits.max_images:
        raise ApiError(413, f"{len(uploads)} images, over the limit of {limits.max_images}")
    return uploads


def _json_images(body: bytes) -> list[tuple[str, bytes]]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(payload, dict) or set(payload) != {"images"}:
        raise ApiError(422, 'send {"images": ["<base64>", ...]} and nothing else')
    images = payload["images"]
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ApiError(422, '"images" must be a list of base64 strings')
    uploads = []
    for i, text in enumerate(images):
        try:
            uploads.append((f"images[{i}]", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise ApiError(400, f"images[{i}] is not valid base64") from None
    return uploads
