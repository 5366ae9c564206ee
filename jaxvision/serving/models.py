"""The models one server serves: each a Predictor (or bundle) under a name and a version, with
its own batcher, warm-up and readiness, and the Prometheus metrics they share (labelled by model,
version and endpoint)."""

import dataclasses
import sys
import threading
import time

import numpy as np
import prometheus_client as prom
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from jaxvision import cpu_compile
from jaxvision.errors import UserError
from jaxvision.serving.batcher import Batcher, QueueFull
from jaxvision.serving.images import BadImage

CLIENT_LEFT = 499  # the status /metrics counts for a client that left mid-request (nginx's)
DEFAULT_NAME, DEFAULT_VERSION = "model", "1"

# numpy dtypes -> the inference protocol's datatypes
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}


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


@dataclasses.dataclass
class Spec:
    """One model to serve: `metadata` is what /v1/metadata answers; `explainer`
    (jaxvision.explain.service.Explainer, optional) answers /v1/explain. cpu_compile: how its
    programs compile on a CPU (a `jaxvision.cpu_compile` choice, or "auto": the fastest of
    them, timed on this CPU before the buckets compile)."""

    predictor: object
    metadata: dict
    explainer: object = None
    name: str = DEFAULT_NAME
    version: str = DEFAULT_VERSION
    cpu_compile: str = cpu_compile.DEFAULT


class Metrics:
    """The server's Prometheus registry: requests by model, version, endpoint and status,
    latency, batch sizes and queue depth."""

    def __init__(self):
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "jaxvision_requests",
            "Inference requests by model, endpoint and HTTP status.",
            ["model", "version", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = prom.Histogram(
            "jaxvision_request_seconds",
            "Inference request latency (receipt to answer).",
            ["model", "version", "endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_sizes = prom.Histogram(
            "jaxvision_batch_size",
            "Images per device batch.",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.depth = prom.Gauge(
            "jaxvision_queue_depth",
            "Requests waiting.",
            ["model", "version"],
            registry=self.registry,
        )


def warm_up(predictor, explainer=None) -> dict:
    """Compiles every batch bucket (of the explanations too), so that no request pays a
    compile; the outputs of one image."""
    size, channels = predictor.image_size, predictor.record["channels"]
    image = np.zeros((size, size, channels), np.uint8)
    first = None
    for bucket in predictor.buckets():
        outputs = predictor.predict([image] * bucket)
        first = first or {k: np.asarray(v)[:1] for k, v in outputs.items()}
        if explainer is not None:
            explainer.explain([image] * bucket)
    return first


def warm_up_failure(error: Exception) -> str:
    """One line for a warm-up that raised `error`: why the model cannot be served."""
    if isinstance(error, UserError):
        return str(error)
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return f"the model cannot be served: compiling its batch buckets failed ({detail})"


def with_counts(outputs: dict) -> dict:
    """A detector's outputs with how many of each image's padded rows are valid."""
    if "valid" in outputs:
        valid = np.asarray(outputs["valid"])
        return {**outputs, "valid_count": valid.reshape(len(valid), -1).sum(1).astype(np.int32)}
    return outputs


class Model:
    """One served model: its predictor, batcher and readiness."""

    def __init__(self, spec: Spec, limits: Limits, metrics: Metrics):
        self.spec, self.limits, self.metrics = spec, limits, metrics
        self.name, self.version = spec.name, spec.version
        self.predictor, self.metadata, self.explainer = (
            spec.predictor,
            spec.metadata,
            spec.explainer,
        )
        self.channels = self.predictor.record["channels"]
        labels = (self.name, self.version)
        self.batcher = Batcher(
            self.predictor.predict,
            # No larger than the predictor's largest compiled bucket.
            max_batch_size=min(
                limits.max_batch_size, getattr(self.predictor, "max_batch", limits.max_batch_size)
            ),
            max_delay_ms=limits.max_delay_ms,
            queue_size=limits.queue_size,
            timeout_s=limits.timeout_s,
            observe_batch=metrics.batch_sizes.labels(*labels).observe,
            observe_queue=metrics.depth.labels(*labels).set,
        )
        self.ready = threading.Event()
        self.failure: str | None = None
        self.outputs: dict | None = None  # name -> (datatype, shape of one image's rows)
        self.explaining = threading.Lock()  # one explanation at a time: a batch's worth of work

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def choose_compile(self) -> None:
        """On a CPU: compiles the predictor with the spec's cpu_compile choice (timing them all
        for "auto"), says which on stderr and in /v1/metadata's "cpu_compile"."""
        choice = self.spec.cpu_compile
        if not cpu_compile.applies() or not hasattr(self.predictor, "compile_with"):
            return
        if choice == "auto":
            found = self.predictor.choose_compile()
            times = ", ".join(f"{name} {ms:.1f} ms" for name, ms in found["ms"].items())
            line = f"{found['chosen']}, the fastest on {found['cpu']} (one image: {times})"
        else:
            self.predictor.compile_with(choice)
            found = {"chosen": choice, "cpu": cpu_compile.cpu_name()}
            line = f"{choice}, as asked, on {found['cpu']}"
        self.metadata = {**self.metadata, "cpu_compile": found}
        print(f"model {self.label} compiles with {line}", file=sys.stderr, flush=True)

    def compile(self) -> str | None:
        """Warms the model up: None, or why it cannot be served."""
        try:
            self.choose_compile()
            first = with_counts(warm_up(self.predictor, self.explainer))
        except Exception as e:  # any failure: the model can never become ready
            self.failure = warm_up_failure(e)
            return self.failure
        self.outputs = {
            k: (DATATYPES.get(str(v.dtype), str(v.dtype).upper()), list(v.shape[1:]))
            for k, v in first.items()
        }
        self.ready.set()
        return None

    def check_ready(self) -> None:
        if self.failure:
            raise ApiError(503, self.failure)
        if not self.ready.is_set():
            raise ApiError(503, f"model {self.name} is still compiling", {"Retry-After": "1"})

    async def predict(self, images: list[np.ndarray]) -> dict:
        """The outputs for `images`, through the batcher; ApiError when it cannot answer."""
        self.check_ready()
        try:
            return await self.batcher.submit(images)
        except QueueFull:
            raise ApiError(503, "the server is busy: retry", {"Retry-After": "1"}) from None
        except TimeoutError:
            raise ApiError(504, f"no answer within {self.limits.timeout_s} s") from None

    async def respond(self, endpoint: str, work) -> Response:
        """The answer of `work()` (-> the JSON body of a 200, or a Response), timed and counted
        under `endpoint`; bad input (BadImage, ApiError) becomes its 4xx / 5xx with a JSON
        error."""
        start = time.perf_counter()
        counted = self.metrics.requests
        try:
            response = await work()
            if not isinstance(response, Response):
                response = JSONResponse(response)
            status = response.status_code
        except (BadImage, ApiError) as e:
            status = e.status
            headers = getattr(e, "headers", None)
            response = JSONResponse({"error": e.message}, status_code=e.status, headers=headers)
        except ClientDisconnect:  # nobody to answer: counted, not a server error
            status, response = CLIENT_LEFT, Response(status_code=CLIENT_LEFT)
        except Exception:  # a bug: counted, then starlette's 500 with its traceback in the log
            counted.labels(self.name, self.version, endpoint, "500").inc()
            raise
        seconds = time.perf_counter() - start
        counted.labels(self.name, self.version, endpoint, str(status)).inc()
        self.metrics.latency.labels(self.name, self.version, endpoint).observe(seconds)
        response.headers["Server-Timing"] = f"predict;dur={1000 * seconds:.2f}"
        return response


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body, up to the limit; ApiError 413 beyond."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
        raise ApiError(413, f"the body is over the limit of {limits.max_body_bytes:,} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise ApiError(413, f"the body is over the limit of {limits.max_body_bytes:,} bytes")
    return body


def _version_order(version: str):
    return (version.isdigit(), int(version) if version.isdigit() else 0, version)


class Models:
    """The served models by name and version."""

    def __init__(self, specs: list[Spec], limits: Limits, metrics: Metrics):
        self.all = [Model(spec, limits, metrics) for spec in specs]
        self.by_name: dict[str, dict[str, Model]] = {}
        for model in self.all:
            versions = self.by_name.setdefault(model.name, {})
            if model.version in versions:
                raise UserError(f"model {model.label} is given twice: give each version once")
            versions[model.version] = model

    def versions(self, name: str) -> list[str]:
        return sorted(self.by_name[name], key=_version_order)

    def find(self, name: str, version: str | None = None) -> Model:
        """The model `name` at `version` (None or "": its latest); ApiError 404 for one not
        served."""
        if name not in self.by_name:
            served = ", ".join(sorted(self.by_name))
            raise ApiError(404, f"no model {name!r} is served here (served: {served})")
        if not version:
            version = self.versions(name)[-1]
        if version not in self.by_name[name]:
            served = ", ".join(self.versions(name))
            raise ApiError(404, f"model {name!r} has no version {version!r} (served: {served})")
        return self.by_name[name][version]

    def pick(self, choice: str | None) -> Model:
        """The /v1 routes' model: `choice` ("NAME" or "NAME@VERSION"), which may be left out
        when one model is served; ApiError 400 / 404."""
        if not choice:
            if len(self.all) == 1:
                return self.all[0]
            served = ", ".join(sorted(m.label for m in self.all))
            raise ApiError(400, f"several models are served ({served}): add ?model=NAME[@VERSION]")
        name, _, version = choice.partition("@")
        return self.find(name, version or None)

    def failure(self) -> str | None:
        failed = [m for m in self.all if m.failure]
        if not failed:
            return None
        return (
            failed[0].failure if len(self.all) == 1 else f"{failed[0].label}: {failed[0].failure}"
        )

    def ready(self) -> bool:
        return all(m.ready.is_set() for m in self.all)
