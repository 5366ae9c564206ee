"""Checks the explanations of a trained classifier on its own test images, and prints them.

  jaxvision explain-checks --workdir=DIR [--images=32] [--methods=a,b]

For each method: Integrated Gradients' completeness error (|sum of attributions - (f(x) -
f(baseline))| / |f(x) - f(baseline)| at 128 steps: median and worst image); the deletion metric
(area under the class probability as the most-attributed pixels are blackened first, against
the same for random pixel orders: lower is more faithful); and for gradient and Grad-CAM the
cascading randomization curve (Spearman rank correlation with the trained model's maps as its
top-level modules are re-initialised from the output down). The images are the first `--images`
of the run's test split.
"""

import time

import numpy as np
from absl import flags

from jaxvision import cli
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import split_source
from jaxvision.explain import METHODS, ModelFunction, checks, explain
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS

_CASCADE = ("gradient", "gradcam")


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A classifier's training workdir.")
    flags.DEFINE_integer("images", 32, "Test images to explain.")
    flags.DEFINE_string("methods", "all", "Methods, a,b (default: all but rollout).")


def main(argv):
    if len(argv) > 1 or not FLAGS.workdir:
        cli.fail("give --workdir=DIR (a classifier's run)")
    try:
        predictor = Predictor.from_workdir(FLAGS.workdir)
        fn = ModelFunction.of(predictor)
        source, _ = split_source(FLAGS.workdir, "test")
        images = [source[i]["image"] for i in range(min(FLAGS.images, len(source)))]
    except UserError as e:
        cli.fail(str(e))
    methods = [m for m in METHODS if m != "attention_rollout"]
    if FLAGS.methods != "all":
        methods = FLAGS.methods.split(",")
    u8, x = fn.inputs(images)
    shape = x.shape[:3]
    print(f"{predictor.record['model']} at step {predictor.step}, {len(images)} test images")
    for method in methods:
        start = time.perf_counter()
        options = {"steps": 128} if method == "integrated_gradients" else {}
        result = explain(fn, images, method=method, **options)
        seconds = time.perf_counter() - start
        ours = checks.deletion_curve(fn, x, result.targets, result.heatmaps)["auc"].mean()
        random = np.mean(
            [
                checks.deletion_curve(fn, x, result.targets, noise)["auc"].mean()
                for noise in (checks.random_heatmaps(shape, seed) for seed in range(3))
            ]
        )
        line = f"{method}: deletion AUC {ours:.3f} (random pixels {random:.3f})"
        if result.completeness is not None:
            c = result.completeness
            share = c["error"] / np.abs(c["delta"])
            line += (
                f", completeness error median {100 * np.median(share):.2f}% "
                f"max {100 * share.max():.2f}% at 128 steps"
            )
        if method in _CASCADE:
            curve = checks.cascading_randomization(
                fn, lambda f, m=method: explain(f, images, method=m).heatmaps, limit=6
            )
            steps = ", ".join(f"{c['randomized'][-1]} {c['spearman']:.2f}" for c in curve[1:])
            line += f"; randomized from the top: {steps}"
        print(f"{line}; {seconds:.1f} s with compilation")
