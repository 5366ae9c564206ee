"""Exports a trained workdir as a self-contained bundle (jaxvision.bundle): the model as
serialized jax.export artefacts per batch bucket, its weights and metadata.

  python -m experiments.export --workdir=DIR --out=BUNDLE [--step=N] [--max_batch=64] \\
      [--platforms=cpu,cuda] [--no-ema]

Loading the bundle (`jaxvision.bundle.load(BUNDLE)`, `experiments.serve --bundle=BUNDLE`)
needs neither the run's config nor its data; on CPU its predictions equal the workdir's
Predictor bitwise.
"""

import sys

from absl import app, flags

from jaxvision import bundle, cli
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_OUT = flags.DEFINE_string("out", None, "The bundle directory to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 64, "The largest batch bucket exported.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "cuda"], "Platforms to lower for.")
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA weights when the run kept them.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value or not _OUT.value:
        cli.fail("--workdir=DIR (a training run) and --out=BUNDLE (a new directory) are required")
    try:
        if _MAX_BATCH.value < 1:
            raise UserError(f"--max_batch={_MAX_BATCH.value}: give at least 1")
        predictor = Predictor.from_workdir(
            _WORKDIR.value, _STEP.value, ema=_EMA.value, max_batch=_MAX_BATCH.value
        )
        source = {
            "workdir": _WORKDIR.value,
            "step": predictor.step,
            "ema": predictor.variables is predictor.ema_variables,
            "metrics": bundle.last_eval(_WORKDIR.value),
        }
        metadata = bundle.write(predictor, _OUT.value, platforms=_PLATFORMS.value, source=source)
    except UserError as e:
        cli.fail(str(e))
    print(
        f"exported {metadata['model']['model']} (step {predictor.step}) to {_OUT.value}: "
        f"buckets {metadata['buckets']}, platforms {', '.join(metadata['platforms'])}"
    )


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
