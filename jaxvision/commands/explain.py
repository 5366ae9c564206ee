"""Explains a trained classifier's predictions: a heat map per image, over the image.

  jaxvision explain --workdir=DIR --images a.jpg b.png --method=gradcam
      [--target=top1|LABEL|INDEX] [--out=DIR] [--layer=NAME] [--steps=64 --baseline=black ...]

Writes, for each image, `<out>/<name>_<method>.png` (the heat map over the preprocessed image,
captioned with the explained label and its probability) and `<out>/<name>_<method>.npy` (the
raw attributions: [S, S, C] for the pixel methods, [h, w] for the map methods; see
jaxvision.explain), and prints one line per image. Integrated Gradients also prints its
completeness error, |sum of attributions - (f(x) - f(baseline))|. `--method=a,b` runs several,
`--method=all` every method the model supports. Default --out: <workdir>/explain.
"""

import os

import numpy as np
from absl import flags

from jaxvision import cli
from jaxvision.data import files
from jaxvision.errors import UserError
from jaxvision.explain import METHODS, ModelFunction, explain
from jaxvision.explain.render import overlay
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS


def method_options(method: str) -> dict:
    if method == "integrated_gradients":
        return {"steps": FLAGS.steps, "baseline": FLAGS.baseline, "rule": FLAGS.rule}
    if method == "smoothgrad":
        return {"samples": FLAGS.samples}
    if method in ("gradcam", "gradcam_plus_plus") and FLAGS.layer:
        return {"layer": FLAGS.layer}
    return {}


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A classifier's training workdir.")
    flags.DEFINE_multi_string("images", [], "Image files: --images a.png b.jpg.")
    flags.DEFINE_string("method", "gradcam", f"One of {', '.join(METHODS)}; several: a,b; or all.")
    flags.DEFINE_string("target", "top1", "Class to explain: top1, a class name or index.")
    flags.DEFINE_string("out", None, "Where to write the maps (default <workdir>/explain).")
    flags.DEFINE_string("layer", None, "Grad-CAM's feature map (default: the last).")
    flags.DEFINE_integer("steps", 64, "Integrated Gradients: path points.")
    flags.DEFINE_enum(
        "baseline",
        "black",
        ["black", "blurred", "uniform", "mean"],
        "Integrated Gradients: baseline.",
    )
    flags.DEFINE_enum(
        "rule", "gausslegendre", ["gausslegendre", "riemann_trapezoid"], "IG: integration rule."
    )
    flags.DEFINE_integer("samples", 25, "SmoothGrad: noisy copies.")


def main(argv):
    images = [*FLAGS.images, *argv[1:]] if FLAGS.images else []
    if not FLAGS.workdir or not images:
        cli.fail("give --workdir=DIR (a classifier's run) and --images a.png [b.jpg ...]")
    try:
        fn = ModelFunction.of(Predictor.from_workdir(FLAGS.workdir))
        methods = list(METHODS) if FLAGS.method == "all" else FLAGS.method.split(",")
        if FLAGS.method == "all" and not getattr(fn.model, "num_heads", None):
            methods.remove("attention_rollout")  # ViTs only
        pixels = [files.load_image(path, fn.channels) for path in images]
        out = FLAGS.out or os.path.join(FLAGS.workdir, "explain")
        os.makedirs(out, exist_ok=True)
        for method in methods:
            result = explain(
                fn, pixels, method=method, target=FLAGS.target, **method_options(method)
            )
            for i, path in enumerate(images):
                name = f"{os.path.splitext(os.path.basename(path))[0]}_{method}"
                label = fn.class_names[result.targets[i]]
                caption = f"{method}: {label} ({result.probabilities[i]:.2f})"
                overlay(result.images[i], result.heatmaps[i], caption).save(
                    os.path.join(out, f"{name}.png")
                )
                np.save(os.path.join(out, f"{name}.npy"), result.attributions[i])
                line = f"{path}: {method} of {label} (p={result.probabilities[i]:.3f})"
                if result.completeness is not None:
                    c = {k: float(v[i]) for k, v in result.completeness.items()}
                    share = c["error"] / max(abs(c["delta"]), 1e-12)
                    line += (
                        f", completeness error {c['error']:.4f} of f(x) - f(baseline) = "
                        f"{c['delta']:.4f} ({100 * share:.2f}%)"
                    )
                print(f"{line} -> {os.path.join(out, name)}.png")
    except UserError as e:
        cli.fail(str(e))
