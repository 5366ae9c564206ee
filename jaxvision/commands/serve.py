"""Serves a bundle (or a workdir's model) over HTTP: jaxvision.serving.app under uvicorn.

  python -m experiments.serve --bundle=BUNDLE [--port=8000] [--host=127.0.0.1]
  python -m experiments.serve --workdir=DIR [--max_batch_size=32] [--max_delay_ms=5]

  curl -F image=@cat.jpg http://127.0.0.1:8000/v1/predict?top_k=3
  curl -F image=@cat.jpg http://127.0.0.1:8000/v1/explain         # Grad-CAM (classifiers)
  curl http://127.0.0.1:8000/readyz        # 200 once every batch bucket is compiled

The service is stateless: run one process per device behind a load balancer for more.
"""

import sys

from absl import app, flags

from jaxvision import bundle, cli
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.serving.app import Limits, create_app

_BUNDLE = flags.DEFINE_string("bundle", None, "A bundle experiments.export wrote.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Or a training run's workdir.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every one).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_DEFAULTS = Limits()
_MAX_BATCH_SIZE = flags.DEFINE_integer(
    "max_batch_size", _DEFAULTS.max_batch_size, "Images per device batch."
)
_MAX_DELAY_MS = flags.DEFINE_float(
    "max_delay_ms", _DEFAULTS.max_delay_ms, "How long a batch's first request waits for others."
)
_QUEUE_SIZE = flags.DEFINE_integer(
    "queue_size", _DEFAULTS.queue_size, "Requests that may wait; beyond: 503."
)
_TIMEOUT_S = flags.DEFINE_float("timeout_s", _DEFAULTS.timeout_s, "Per request; beyond: 504.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", _DEFAULTS.max_images, "Images per request.")
_MAX_BODY_MB = flags.DEFINE_float(
    "max_body_mb", _DEFAULTS.max_body_bytes / 2**20, "Request body limit (MiB)."
)
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", _DEFAULTS.max_pixels, "Pixels per image, checked before decoding."
)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if bool(_BUNDLE.value) == bool(_WORKDIR.value):
        cli.fail("give --bundle=BUNDLE (from experiments.export) or --workdir=DIR, not both")
    if _MAX_BATCH_SIZE.value < 1 or _QUEUE_SIZE.value < 1 or _MAX_IMAGES.value < 1:
        cli.fail("--max_batch_size, --queue_size and --max_images must be at least 1")
    try:
        if _BUNDLE.value:
            predictor = bundle.load(_BUNDLE.value)
            metadata = predictor.metadata
        else:
            predictor = Predictor.from_workdir(_WORKDIR.value, max_batch=_MAX_BATCH_SIZE.value)
            metadata = {"model": predictor.record, "source": {"workdir": _WORKDIR.value}}
            metadata["source"]["step"] = predictor.step
    except UserError as e:
        cli.fail(str(e))
    limits = Limits(
        max_batch_size=min(_MAX_BATCH_SIZE.value, predictor.max_batch),
        max_delay_ms=_MAX_DELAY_MS.value,
        queue_size=_QUEUE_SIZE.value,
        timeout_s=_TIMEOUT_S.value,
        max_body_bytes=int(_MAX_BODY_MB.value * 2**20),
        max_images=_MAX_IMAGES.value,
        max_pixels=_MAX_PIXELS.value,
    )
    import uvicorn

    service = create_app(predictor, metadata, limits, explainer=predictor.explainer())
    uvicorn.run(service, host=_HOST.value, port=_PORT.value, log_level="warning")


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
