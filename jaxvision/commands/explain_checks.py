"""Checks the explanations of a trained classifier on its own test images, and prints them.

  jaxvision explain-checks --workdir=DIR [--images=32] [--methods=a,b]
      [--checks=deletion,completeness,randomization,pointing_game] [--pictures=N --out=DIR]

For each method: Integrated Gradients' completeness error (|sum of attributions - (f(x) -
f(baseline))| / |f(x) - f(baseline)| at 128 steps: median and worst image); the deletion metric
(area under the class probability as the most-attributed pixels are blackened first, against
the same for random pixel orders: lower is more faithful); for gradient and Grad-CAM the
cascading randomization curve (Spearman rank correlation with the trained model's maps as its
top-level modules are re-initialised from the output down); and where the test records carry
the object's box (shapes_classification), the pointing game: the share of images whose heat-map
maximum falls inside the box, beside two maps that know nothing (every pixel equal: the boxes'
share of the image; the image's centre). The images are the first `--images` of the run's test
split; `--pictures=N` draws the first N of them, one row of heat maps per method, into
`<out>/heatmaps.png`.
"""

import os
import time

import numpy as np
from absl import flags
from PIL import Image

from jaxvision import cli
from jaxvision.data.transforms import center_crop_boxes
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import split_source
from jaxvision.explain import METHODS, ModelFunction, checks, explain
from jaxvision.explain.render import heatmap_grid
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS

CHECKS = ("deletion", "completeness", "randomization", "pointing_game")
_CASCADE = ("gradient", "gradcam")


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A classifier's training workdir.")
    flags.DEFINE_integer("images", 32, "Test images to explain.")
    flags.DEFINE_string("methods", "all", "Methods, a,b (default: all but rollout).")
    flags.DEFINE_string(
        "checks",
        "all",
        f"Checks, a,b of {', '.join(CHECKS)} (default: all that apply; pointing_game where the "
        "test records carry boxes).",
    )
    flags.DEFINE_integer("pictures", 0, "Draw the first N images' maps into <out>/heatmaps.png.")
    flags.DEFINE_string("out", None, "Where --pictures goes (default <workdir>/explain).")


def _chosen(value: str, names, what: str) -> list[str]:
    chosen = [n for n in value.split(",") if n]
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        given = ",".join(unknown) or repr(value)
        raise UserError(f"unknown {what} {given}: use {', '.join(names)}")
    return chosen


def _boxes(records, predictor) -> list[np.ndarray] | None:
    """The records' boxes in the model's input pixels (as its preprocessing resizes and crops
    them), or None when the records carry none."""
    if not all("boxes" in r for r in records):
        return None
    size, ratio = predictor.image_size, predictor.record.get("crop_ratio", 1.0)
    return [center_crop_boxes(r["boxes"], *r["image"].shape[:2], size, ratio) for r in records]


def _reference_scores(boxes, side: int) -> str:
    """The pointing game of maps that know nothing: constant, and peaked at the centre."""
    flat = checks.pointing_game(np.zeros((len(boxes), side, side)), boxes).mean()
    centre = np.arange(side) + 0.5 - side / 2
    peak = -(centre[:, None] ** 2 + centre[None, :] ** 2)
    middle = checks.pointing_game(np.broadcast_to(peak, (len(boxes), side, side)), boxes).mean()
    return f"constant map {flat:.3f}, image centre {middle:.3f}"


def main(argv):
    if len(argv) > 1 or not FLAGS.workdir:
        cli.fail("give --workdir=DIR (a classifier's run)")
    try:
        predictor = Predictor.from_workdir(FLAGS.workdir)
        fn = ModelFunction.of(predictor)
        source, _ = split_source(FLAGS.workdir, "test")
        records = [source[i] for i in range(min(FLAGS.images, len(source)))]
        methods = [m for m in METHODS if m != "attention_rollout"]
        if FLAGS.methods != "all":
            methods = FLAGS.methods.split(",")
            for method in methods:
                METHODS[method]  # an unknown one: the error names the methods
        boxes = _boxes(records, predictor)
        wanted = CHECKS if FLAGS.checks == "all" else _chosen(FLAGS.checks, CHECKS, "check(s)")
        if boxes is None and "pointing_game" in wanted:
            if FLAGS.checks != "all":
                raise UserError(
                    "the pointing game needs the object's box in each test record, and this "
                    "run's test split has none (shapes_classification has them)"
                )
            wanted = [c for c in wanted if c != "pointing_game"]
    except UserError as e:
        cli.fail(str(e))
    images = [r["image"] for r in records]
    u8, x = fn.inputs(images)
    shape = x.shape[:3]
    print(f"{predictor.record['model']} at step {predictor.step}, {len(images)} test images")
    if "pointing_game" in wanted:
        print(f"pointing game of maps that know nothing: {_reference_scores(boxes, shape[1])}")
    rows = []
    for method in methods:
        start = time.perf_counter()
        options = {"steps": 128} if method == "integrated_gradients" else {}
        try:
            result = explain(fn, images, method=method, **options)
        except UserError as e:
            cli.fail(str(e))
        seconds = time.perf_counter() - start
        parts = []
        if "deletion" in wanted:
            ours = checks.deletion_curve(fn, x, result.targets, result.heatmaps)["auc"].mean()
            random = np.mean(
                [
                    checks.deletion_curve(fn, x, result.targets, noise)["auc"].mean()
                    for noise in (checks.random_heatmaps(shape, seed) for seed in range(3))
                ]
            )
            parts.append(f"deletion AUC {ours:.3f} (random pixels {random:.3f})")
        if "completeness" in wanted and result.completeness is not None:
            c = result.completeness
            share = c["error"] / np.abs(c["delta"])
            parts.append(
                f"completeness error median {100 * np.median(share):.2f}% "
                f"max {100 * share.max():.2f}% at 128 steps"
            )
        label = method
        if "pointing_game" in wanted:
            score = checks.pointing_game(result.heatmaps, boxes).mean()
            parts.append(f"pointing game {score:.3f}")
            label = f"{method}\npointing game {score:.2f}"
        if "randomization" in wanted and method in _CASCADE:
            curve = checks.cascading_randomization(
                fn, lambda f, m=method: explain(f, images, method=m).heatmaps, limit=6
            )
            steps = ", ".join(f"{c['randomized'][-1]} {c['spearman']:.2f}" for c in curve[1:])
            parts.append(f"randomized from the top: {steps}")
        rows.append((label, result.heatmaps[: FLAGS.pictures]))
        print(f"{method}: {'; '.join(parts) or 'explained'}; {seconds:.1f} s with compilation")
    if FLAGS.pictures > 0:
        out = FLAGS.out or os.path.join(FLAGS.workdir, "explain")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "heatmaps.png")
        shown = None if boxes is None else boxes[: FLAGS.pictures]
        picture = heatmap_grid(u8[: FLAGS.pictures], rows, shown)
        # 256 colours: a third of the bytes, with no visible change to the maps.
        palette = picture.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(path, optimize=True)
        print(f"heat maps of {min(FLAGS.pictures, len(images))} images -> {path}")
