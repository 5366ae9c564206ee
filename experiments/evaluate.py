"""Evaluates a trained workdir: the metrics table of a split, or top-k labels for images.

  python -m experiments.evaluate --workdir=DIR [--step=N] [--split=test|train]
  python -m experiments.evaluate --workdir=DIR --images a.png b.jpg [--top_k=5]

Rebuilds the run from `DIR/config.json`, restores the latest (or `--step`) checkpoint, and
prints the metrics (top-1/top-5/loss, macro precision/recall/F1 and a per-class table), for the
raw weights and their EMA when the run kept one. `--images` prints, for each file, the top-k
class names with their probabilities.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from experiments.classification import setup
from experiments.configs.common import base_config
from jaxvision import cli, evaluation
from jaxvision.checkpoint import Checkpointer
from jaxvision.data import files, transforms
from jaxvision.errors import UserError
from jaxvision.sharding import abstract_like, batch_split
from jaxvision.train import steps
from jaxvision.train.metrics import per_class_report

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (config.json, checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Which split to evaluate.")
_IMAGES = flags.DEFINE_multi_string(
    "images", [], "Image files to label instead: --images a.png b.jpg (or --images=a.png ...)."
)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Labels per image.")


def load_run(workdir: str, step: int | None):
    """(config, run, restored state) of a training workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: --workdir must be a directory a training run wrote")
    with open(path) as f:
        stored = json.load(f)
    # Fields added to jaxvision after the run was trained keep their defaults.
    config = base_config()
    for key, value in stored.items():
        if key not in config:
            continue
        if isinstance(config[key], tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        if isinstance(config[key], ml_collections.ConfigDict):
            value = ml_collections.ConfigDict(value)
        config[key] = value
    run = setup(config)
    # Read-only: the workdir may belong to a run that is still training.
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    steps_saved = checkpointer.all_steps()
    if not steps_saved:
        raise UserError(f"no checkpoint in {checkpointer.directory}: train first")
    if step is not None and step not in steps_saved:
        raise UserError(
            f"no checkpoint for step {step} in {checkpointer.directory}: "
            f"saved steps are {', '.join(map(str, sorted(steps_saved)))}"
        )
    abstract = abstract_like(run.abstract_state, run.state_sharding)
    if step is None:  # the newest one that reads
        state, _, skipped = checkpointer.restore_newest_readable(abstract)
        for line in skipped:
            print(f"skipped an unreadable checkpoint, {line}", file=sys.stderr)
    else:
        state, _ = checkpointer.restore(abstract, step)
    checkpointer.close()
    return config, run, state


def label_images(config, run, state, paths: list[str], top_k: int) -> list[dict]:
    """Top-k (class name, probability) for each image, preprocessed as in evaluation."""
    channels = run.dataset.train[0]["image"].shape[-1]
    images = [
        transforms.resize_center_crop(
            files.load_image(p, channels), config.image_size, config.eval_crop_ratio
        )
        for p in paths
    ]
    split = batch_split(run.mesh)
    padded = -(-len(images) // split) * split
    batch = np.stack(images + [images[0]] * (padded - len(images)))
    params = state.ema_params if state.ema_params is not None else state.params

    @jax.jit
    def predict(params, batch_stats, images):
        x = steps.normalize(images, run.dataset.mean, run.dataset.std)
        variables = {"params": params} | ({"batch_stats": batch_stats} if batch_stats else {})
        return jax.nn.softmax(run.model.apply(variables, x, train=False))

    probs = np.asarray(predict(params, state.batch_stats, jnp.asarray(batch)))[: len(paths)]
    k = min(top_k, probs.shape[-1])
    names = run.dataset.class_names
    return [
        {"image": p, "top": [(names[i], float(row[i])) for i in np.argsort(-row)[:k]]}
        for p, row in zip(paths, probs, strict=True)
    ]


def main(argv):
    # `--images a.png b.jpg`: the files after the first are positional arguments.
    images = [*_IMAGES.value, *argv[1:]] if _IMAGES.value else []
    if len(argv) > 1 and not _IMAGES.value:
        cli.fail(f"unexpected arguments {argv[1:]}: to label images, pass --images a.png b.jpg")
    if not _WORKDIR.value:
        cli.fail("--workdir is required: the directory of a training run")
    try:
        config, run, state = load_run(_WORKDIR.value, _STEP.value)
        if images:
            for row in label_images(config, run, state, images, _TOP_K.value):
                labels = ", ".join(f"{name} {p:.3f}" for name, p in row["top"])
                print(f"{row['image']}: {labels}")
            return
        eval_step = steps.jit_eval_step(
            steps.make_eval_step(
                run.model, mean=run.dataset.mean, std=run.dataset.std, confusion=True
            ),
            run.mesh,
            run.state_sharding,
            run.data_sharding,
        )
        source = run.dataset.test if _SPLIT.value == "test" else run.dataset.train
        for prefix, weights_state in evaluation.weight_sets(state):
            metrics, confusion = evaluation.evaluate_split(
                eval_step,
                weights_state,
                source,
                sharding=run.data_sharding,
                batch_size=config.batch_size,
                image_size=config.image_size,
                crop_ratio=config.eval_crop_ratio,
                prefix=prefix,
            )
            report = per_class_report(confusion)
            metrics |= {
                f"{prefix}/macro_{k}": report[f"macro_{k}"] for k in ("precision", "recall", "f1")
            }
            print(f"{prefix} on {_SPLIT.value} ({len(source)} images), step {int(state.step)}:")
            print(evaluation.print_table(metrics, report, run.dataset.class_names))
    except UserError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
