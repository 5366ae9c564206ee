"""Evaluates trained workdirs: the metrics of a split, top-k labels for images, or an ensemble.

  jaxvision evaluate --workdir=DIR [--step=N] [--split=test|train]
  jaxvision evaluate --workdir=DIR --images a.png b.jpg [--top_k=5]
  jaxvision evaluate --workdir=A --workdir=B [--workdir=C ...] [--images ...]
  jaxvision evaluate --workdir=DETECTOR --images a.jpg [--out=DIR]

One workdir: restores the newest readable (or `--step`) checkpoint and prints the metrics
(top-1/top-5/loss, macro precision/recall/F1 and a per-class table) for the raw weights and
their EMA when the run kept one. Several: an ensemble that averages the members' probabilities
(members of one architecture run as one vmapped forward); it prints each member's and the
ensemble's top-1/top-5/NLL and expected calibration error. `--images` prints, for each file,
the top-k class names with their probabilities; for a detector, its boxes (x1, y1, x2, y2 in the
image's own pixels) with class names and scores, and writes each image with them drawn to
`--out` (default `<workdir>/predictions/`). A detector's metrics are the 12 COCO box stats and
each class's AP. Models and preprocessing come from each
workdir's model.json: only a split's evaluation opens the data (as the run's config.json says).
"""

import os

import numpy as np
from absl import flags

from jaxvision import cli, evaluation
from jaxvision.data import files
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import evaluate_ensemble, split_metrics, split_source
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS


def print_detections(predictor: Predictor, paths: list[str], pixels: list, out: str) -> None:
    """Each image's boxes above the score threshold, printed and drawn into `out`."""
    from PIL import Image

    from jaxvision.evaluation.draw import draw_detections

    outputs = predictor.predict(pixels)
    os.makedirs(out, exist_ok=True)
    names = predictor.class_names
    for i, (path, image) in enumerate(zip(paths, pixels, strict=True)):
        keep = outputs["valid"][i] & (outputs["scores"][i] >= FLAGS.score_threshold)
        boxes, scores = outputs["boxes"][i][keep], outputs["scores"][i][keep]
        classes = outputs["classes"][i][keep]
        print(f"{path}: {len(boxes)} boxes")
        for box, c, score in zip(boxes, classes, scores, strict=True):
            x1, y1, x2, y2 = (f"{v:.1f}" for v in box)
            print(f"  {names[c]} {score:.3f} [{x1}, {y1}, {x2}, {y2}]")
        drawn = draw_detections(image, boxes, classes, scores, names)
        target = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + ".png")
        Image.fromarray(drawn).save(target)
    print(f"drawn images in {out}")


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_multi_string(
        "workdir",
        None,
        "A training workdir (config.json, model.json, checkpoints/); several: an ensemble.",
    )
    flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
    flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
    flags.DEFINE_multi_string(
        "images", [], "Image files to label instead: --images a.png b.jpg (or --images=a.png ...)."
    )
    flags.DEFINE_integer("top_k", 5, "Labels per image.")
    flags.DEFINE_string(
        "out",
        None,
        "Detectors: where --images writes the drawn images (default <workdir>/predictions).",
    )
    flags.DEFINE_float(
        "score_threshold",
        0.3,
        "Detectors: the least score of a box that --images prints and draws.",
    )


def main(argv):
    # `--images a.png b.jpg`: the files after the first are positional arguments.
    images = [*FLAGS.images, *argv[1:]] if FLAGS.images else []
    if len(argv) > 1 and not FLAGS.images:
        cli.fail(f"unexpected arguments {argv[1:]}: to label images, pass --images a.png b.jpg")
    workdirs = FLAGS.workdir or []
    if not workdirs:
        cli.fail("--workdir is required: the directory of a training run (several: an ensemble)")
    try:
        predictors = [Predictor.from_workdir(w, FLAGS.step) for w in workdirs]
        first = predictors[0]
        if first.task.kind == "detection" and len(predictors) > 1:
            raise UserError("ensembles are for classifiers: evaluate one detector workdir")
        if images:
            pixels = [files.load_image(p, first.record["channels"]) for p in images]
            if first.task.kind == "detection":
                out = FLAGS.out or os.path.join(workdirs[0], "predictions")
                print_detections(first, images, pixels, out)
                return
            probs = np.mean([p.predict(pixels)["probs"] for p in predictors], axis=0)
            for path, top in zip(images, first.top_k(probs, FLAGS.top_k), strict=True):
                print(f"{path}: {', '.join(f'{name} {p:.3f}' for name, p in top)}")
            return
        source, batch_size = split_source(workdirs[0], FLAGS.split)
        if len(predictors) > 1:
            metrics = evaluate_ensemble(predictors, source, batch_size)
            print(f"{len(predictors)} members on {FLAGS.split} ({len(source)} images):")
            for i, w in enumerate(workdirs):
                print(f"member_{i}: {w} (step {predictors[i].step})")
            print(evaluation.metrics_table(metrics))
            return
        only = predictors[0]
        sets = [("eval", only.trained_variables), ("eval_ema", only.ema_variables)]
        for name, variables in sets:
            if variables is not None:
                metrics, evaluator = split_metrics(only, variables, source, batch_size, name)
                print(f"{name} on {FLAGS.split} ({len(source)} images), step {only.step}:")
                print(evaluator.table(metrics))
    except UserError as e:
        cli.fail(str(e))
