"""Evaluates trained workdirs: the metrics of a split, top-k labels for images, or an ensemble.

  python -m experiments.evaluate --workdir=DIR [--step=N] [--split=test|train]
  python -m experiments.evaluate --workdir=DIR --images a.png b.jpg [--top_k=5]
  python -m experiments.evaluate --workdir=A --workdir=B [--workdir=C ...] [--images ...]

One workdir: restores the newest readable (or `--step`) checkpoint and prints the metrics
(top-1/top-5/loss, macro precision/recall/F1 and a per-class table) for the raw weights and
their EMA when the run kept one. Several: an ensemble that averages the members' probabilities
(members of one architecture run as one vmapped forward); it prints each member's and the
ensemble's top-1/top-5/NLL and expected calibration error. `--images` prints, for each file,
the top-k class names with their probabilities. Models and preprocessing come from each
workdir's model.json: only a split's evaluation opens the data (as the run's config.json says).
"""

import sys

import numpy as np
from absl import app, flags

from experiments.runs import evaluate_ensemble, split_metrics, split_source
from jaxvision import cli, evaluation
from jaxvision.data import files
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor

_WORKDIR = flags.DEFINE_multi_string(
    "workdir",
    None,
    "A training workdir (config.json, model.json, checkpoints/); several: an ensemble.",
)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
_IMAGES = flags.DEFINE_multi_string(
    "images", [], "Image files to label instead: --images a.png b.jpg (or --images=a.png ...)."
)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Labels per image.")


def main(argv):
    # `--images a.png b.jpg`: the files after the first are positional arguments.
    images = [*_IMAGES.value, *argv[1:]] if _IMAGES.value else []
    if len(argv) > 1 and not _IMAGES.value:
        cli.fail(f"unexpected arguments {argv[1:]}: to label images, pass --images a.png b.jpg")
    workdirs = _WORKDIR.value or []
    if not workdirs:
        cli.fail("--workdir is required: the directory of a training run (several: an ensemble)")
    try:
        predictors = [Predictor.from_workdir(w, _STEP.value) for w in workdirs]
        if images:
            first = predictors[0]
            pixels = [files.load_image(p, first.record["channels"]) for p in images]
            probs = np.mean([p.predict(pixels)["probs"] for p in predictors], axis=0)
            for path, top in zip(images, first.top_k(probs, _TOP_K.value), strict=True):
                print(f"{path}: {', '.join(f'{name} {p:.3f}' for name, p in top)}")
            return
        source, batch_size = split_source(workdirs[0], _SPLIT.value)
        if len(predictors) > 1:
            metrics = evaluate_ensemble(predictors, source, batch_size)
            print(f"{len(predictors)} members on {_SPLIT.value} ({len(source)} images):")
            for i, w in enumerate(workdirs):
                print(f"member_{i}: {w} (step {predictors[i].step})")
            print(evaluation.metrics_table(metrics))
            return
        only = predictors[0]
        sets = [("eval", only.trained_variables), ("eval_ema", only.ema_variables)]
        for name, variables in sets:
            if variables is not None:
                metrics, evaluator = split_metrics(only, variables, source, batch_size, name)
                print(f"{name} on {_SPLIT.value} ({len(source)} images), step {only.step}:")
                print(evaluator.table(metrics))
    except UserError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
