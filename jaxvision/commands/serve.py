"""Serves bundles (or a workdir's model) over HTTP: jaxvision.serving.app under uvicorn.

  jaxvision serve --bundle=BUNDLE [--port=8000] [--host=127.0.0.1]
  jaxvision serve --workdir=DIR [--max_batch_size=32] [--max_delay_ms=5]
  jaxvision serve --bundle digits=BUNDLE --bundle shapes@2=BUNDLE2    # several models
  jaxvision serve --bundle=BUNDLE --cpu_compile=xla    # on a CPU: no start-up timing

A plain --bundle=BUNDLE (or --workdir) is served as model "model", version "1"; NAME=BUNDLE
names it, NAME@VERSION=BUNDLE gives its version too (the /v2 routes' latest is the highest).

  curl -F image=@cat.jpg http://127.0.0.1:8000/v1/predict?top_k=3
  curl -F image=@cat.jpg http://127.0.0.1:8000/v1/explain         # Grad-CAM (classifiers)
  curl http://127.0.0.1:8000/readyz        # 200 once every batch bucket is compiled

A bundle is checked whole when it loads (jaxvision.bundle); a model that still cannot compile
ends the server with its one-line error and a non-zero exit rather than answering 503 forever.

On a CPU, --cpu_compile=auto (the default) times each of jaxvision.cpu_compile's choices on one
image before the buckets compile and keeps the fastest; it says which on stderr and in
/v1/metadata.

The service is stateless: run one process per device behind a load balancer for more.
"""

import re

from absl import flags

from jaxvision import bundle, cli, cpu_compile
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.serving.app import serve_models
from jaxvision.serving.models import DEFAULT_NAME, DEFAULT_VERSION, Limits, Spec

FLAGS = flags.FLAGS

_DEFAULTS = Limits()


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_multi_string(
        "bundle", [], "A bundle jaxvision export wrote: BUNDLE, NAME=BUNDLE or NAME@VERSION=BUNDLE."
    )
    flags.DEFINE_string("workdir", None, "Or a training run's workdir.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every one).")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_integer("max_batch_size", _DEFAULTS.max_batch_size, "Images per device batch.")
    flags.DEFINE_float(
        "max_delay_ms", _DEFAULTS.max_delay_ms, "How long a batch's first request waits for others."
    )
    flags.DEFINE_integer("queue_size", _DEFAULTS.queue_size, "Requests that may wait; beyond: 503.")
    flags.DEFINE_float("timeout_s", _DEFAULTS.timeout_s, "Per request; beyond: 504.")
    flags.DEFINE_integer("max_images", _DEFAULTS.max_images, "Images per request.")
    flags.DEFINE_float("max_body_mb", _DEFAULTS.max_body_bytes / 2**20, "Request body limit (MiB).")
    flags.DEFINE_integer(
        "max_pixels", _DEFAULTS.max_pixels, "Pixels per image, checked before decoding."
    )
    flags.DEFINE_enum(
        "cpu_compile",
        "auto",
        ["auto", *cpu_compile.CHOICES],
        "On a CPU, how the models compile: auto (the fastest choice, timed at start-up) or one "
        "choice of jaxvision.cpu_compile.",
    )


def parse_bundle(value: str) -> tuple[str, str, str]:
    """(name, version, path) of a --bundle value; UserError for a malformed one."""
    name, eq, path = value.partition("=")
    if not eq:
        return DEFAULT_NAME, DEFAULT_VERSION, value
    name, at, version = name.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or (at and not re.fullmatch(r"\d+", version)):
        raise UserError(
            f"--bundle={value}: give BUNDLE, NAME=BUNDLE or NAME@VERSION=BUNDLE (a name of "
            "letters, digits, '_', '.' or '-'; a whole-number version)"
        )
    if not path:
        raise UserError(f"--bundle={value}: give the bundle's path after '='")
    return name, version or DEFAULT_VERSION, path


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if bool(FLAGS.bundle) == bool(FLAGS.workdir):
        cli.fail("give --bundle=BUNDLE (from jaxvision export) or --workdir=DIR, not both")
    if FLAGS.max_batch_size < 1 or FLAGS.queue_size < 1 or FLAGS.max_images < 1:
        cli.fail("--max_batch_size, --queue_size and --max_images must be at least 1")
    specs = []
    try:
        if FLAGS.bundle:
            for value in FLAGS.bundle:
                name, version, path = parse_bundle(value)
                predictor = bundle.load(path)
                explainer = predictor.explainer()
                specs.append(
                    Spec(predictor, predictor.metadata, explainer, name, version, FLAGS.cpu_compile)
                )
            labels = [(s.name, s.version) for s in specs]
            if len(set(labels)) != len(labels):
                raise UserError(
                    "two --bundle flags give the same model name and version: name each "
                    "NAME=BUNDLE or NAME@VERSION=BUNDLE"
                )
        else:
            predictor = Predictor.from_workdir(FLAGS.workdir, max_batch=FLAGS.max_batch_size)
            metadata = {"model": predictor.record, "source": {"workdir": FLAGS.workdir}}
            metadata["source"]["step"] = predictor.step
            specs.append(
                Spec(predictor, metadata, predictor.explainer(), cpu_compile=FLAGS.cpu_compile)
            )
    except UserError as e:
        cli.fail(str(e))
    limits = Limits(
        max_batch_size=FLAGS.max_batch_size,  # each model's no larger than its largest bucket
        max_delay_ms=FLAGS.max_delay_ms,
        queue_size=FLAGS.queue_size,
        timeout_s=FLAGS.timeout_s,
        max_body_bytes=int(FLAGS.max_body_mb * 2**20),
        max_images=FLAGS.max_images,
        max_pixels=FLAGS.max_pixels,
    )
    failure = serve_models(specs, limits, host=FLAGS.host, port=FLAGS.port)
    if failure:
        cli.fail(failure)
