"""The HTTP service: Predictors (from bundles or a workdir) behind FastAPI, each under a name
and version with its own dynamic batching and readiness, Prometheus metrics and 4xx answers for
bad input. `jaxvision serve` runs it with uvicorn.

  POST /v1/predict   multipart files in field "image" (one or many), or JSON
                     {"images": ["<base64>", ...]}; ?top_k=N for classifiers
  GET  /healthz      200 while the process is up
  GET  /readyz       200 once every model's batch buckets are compiled (503 before, and with
                     the error when compiling failed: `jaxvision serve` then exits with it)
  GET  /v1/metadata  the model: task, classes, input size, preprocessing, source, versions
  GET  /metrics      Prometheus: requests by model, endpoint and status (499: the client left
                     before its request was read), latency, batch sizes, queue depth
  POST /v1/explain   the same inputs (classifiers): Grad-CAM of each image's top-1 class,
                     as a heat map [S, S] and a PNG to lay over the image's crop box
  GET  /             a web page: choose or drop an image, see the answer drawn on it
  /v2/...            the Open Inference Protocol (jaxvision.serving.v2)
  POST /v1/models/NAME:predict   TF Serving's REST form (jaxvision.serving.v2)

With several models the /v1 routes (and the page) take ?model=NAME[@VERSION].
"""

import asyncio
import base64
import binascii
import contextlib
import importlib.resources
import json
import threading
from collections.abc import Callable

import numpy as np
import prometheus_client as prom
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from jaxvision.serving import v2
from jaxvision.serving.explanations import explanations
from jaxvision.serving.images import decode
from jaxvision.serving.models import (  # noqa: F401 (Limits, ApiError: this module's API too)
    CLIENT_LEFT,
    ApiError,
    Limits,
    Metrics,
    Models,
    Spec,
    read_body,
    warm_up,
    warm_up_failure,
)

DEFAULT_LIMITS = Limits()


def create_app(
    predictor,
    metadata: dict,
    limits: Limits = DEFAULT_LIMITS,
    explainer=None,
    on_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service around one `predictor` (a jaxvision Predictor or bundle): create_service."""
    return create_service([Spec(predictor, metadata, explainer)], limits, on_failure)


def create_service(
    specs: list[Spec],
    limits: Limits = DEFAULT_LIMITS,
    on_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service around `specs` (jaxvision.serving.models.Spec: a predictor, its metadata and
    explainer, name and version). Buckets compile in a background thread, one model after
    another; /readyz says when all are done. When one cannot compile, /readyz and its
    predictions answer 503 with why, and `on_failure` (the serve command's: stop the server,
    exit non-zero) gets that one line."""
    metrics = Metrics()
    models = Models(specs, limits, metrics)
    page = importlib.resources.files(__package__).joinpath("page.html").read_text()

    def compile_buckets():
        for model in models.all:
            if model.compile() is not None:
                if on_failure is not None:
                    on_failure(models.failure())
                return

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=compile_buckets, name="warm-up", daemon=True).start()
        yield
        for model in models.all:
            model.batcher.close()

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
        failure = models.failure()
        if failure:
            return JSONResponse({"status": "failed", "error": failure}, status_code=503)
        if not models.ready():
            return JSONResponse({"status": "compiling"}, status_code=503)
        return {"status": "ready"}

    @app.get("/v1/metadata")
    async def model_metadata(request: Request):
        return models.pick(request.query_params.get("model")).metadata

    @app.get("/metrics")
    async def metrics_page():
        return Response(prom.generate_latest(metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    async def read_images(request: Request, model) -> list[np.ndarray]:
        uploads = await _uploads(request, limits)
        # Decoded off the event loop: other requests are read meanwhile.
        return await asyncio.to_thread(
            lambda: [
                decode(data, channels=model.channels, max_pixels=limits.max_pixels, name=name)
                for name, data in uploads
            ]
        )

    def endpoint(request: Request, name: str) -> str:
        """The metrics' endpoint: the page's own requests are counted apart from clients'."""
        return "page" if request.headers.get("x-jaxvision-page") else name

    @app.post("/v1/predict")
    async def predict(request: Request):
        model = models.pick(request.query_params.get("model"))

        async def work():
            model.batcher.expecting(+1)  # a batch forming now waits for this one
            try:
                top_k = _top_k(request, limits, len(model.predictor.class_names))
                images = await read_images(request, model)
            finally:
                model.batcher.expecting(-1)
            outputs = await model.predict(images)
            return {"predictions": model.predictor.answers(outputs, top_k)}

        return await model.respond(endpoint(request, "predict"), work)

    @app.post("/v1/explain")
    async def explain(request: Request):
        model = models.pick(request.query_params.get("model"))

        async def work():
            if model.explainer is None:
                raise ApiError(404, f"this {model.predictor.kind} model has no explanations")
            images = await read_images(request, model)
            model.check_ready()

            def run():
                with model.explaining:
                    return model.explainer.explain(images)

            outputs = await asyncio.to_thread(run)
            return {"explanations": explanations(model.predictor, model.explainer, images, outputs)}

        return await model.respond(endpoint(request, "explain"), work)

    v2.add_routes(app, models, limits)
    return app


def run(
    predictor, metadata: dict, limits: Limits, explainer=None, *, host: str, port: int
) -> str | None:
    """Serves `predictor` (create_app) under uvicorn: serve_models with one model."""
    return serve_models([Spec(predictor, metadata, explainer)], limits, host=host, port=port)


def serve_models(specs: list[Spec], limits: Limits, *, host: str, port: int) -> str | None:
    """Serves `specs` (create_service) under uvicorn until the process is stopped: None; or
    until a model cannot be served (its batch buckets did not compile): that one line."""
    import uvicorn

    failed = []

    def stop(message: str) -> None:  # from the warm-up thread, while server.run() runs
        failed.append(message)
        server.should_exit = True

    service = create_service(specs, limits, on_failure=stop)
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
    body = await read_body(request, limits)
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
