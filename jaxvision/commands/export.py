"""Exports a trained workdir as a self-contained bundle (jaxvision.bundle): the model as
serialized jax.export artefacts per batch bucket, its weights and metadata.

  jaxvision export --workdir=DIR --out=BUNDLE [--step=N] [--max_batch=64] \\
      [--platforms=cpu,cuda] [--no-ema]

Loading the bundle (`jaxvision.bundle.load(BUNDLE)`, `jaxvision serve --bundle=BUNDLE`)
needs neither the run's config nor its data; on CPU its predictions equal the workdir's
Predictor bitwise.
"""

from absl import flags

from jaxvision import bundle, cli
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A training run's workdir.")
    flags.DEFINE_string("out", None, "The bundle directory to write.")
    flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
    flags.DEFINE_integer("max_batch", 64, "The largest batch bucket exported.")
    flags.DEFINE_list("platforms", ["cpu", "cuda"], "Platforms to lower for.")
    flags.DEFINE_bool("ema", True, "Export the EMA weights when the run kept them.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if not FLAGS.workdir or not FLAGS.out:
        cli.fail("--workdir=DIR (a training run) and --out=BUNDLE (a new directory) are required")
    try:
        if FLAGS.max_batch < 1:
            raise UserError(f"--max_batch={FLAGS.max_batch}: give at least 1")
        predictor = Predictor.from_workdir(
            FLAGS.workdir, FLAGS.step, ema=FLAGS.ema, max_batch=FLAGS.max_batch
        )
        source = {
            "workdir": FLAGS.workdir,
            "step": predictor.step,
            "ema": predictor.variables is predictor.ema_variables,
            "metrics": bundle.last_eval(FLAGS.workdir),
        }
        metadata = bundle.write(predictor, FLAGS.out, platforms=FLAGS.platforms, source=source)
    except UserError as e:
        cli.fail(str(e))
    print(
        f"exported {metadata['model']['model']} (step {predictor.step}) to {FLAGS.out}: "
        f"buckets {metadata['buckets']}, platforms {', '.join(metadata['platforms'])}"
    )
