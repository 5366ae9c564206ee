"""What compressing a model costs: its predictions on a split, prediction speed, weight bytes,
and the workdir a compressed model is written to (so the Predictor, jaxvision evaluate and
jaxvision export read it as any run)."""

import json
import os
import shutil
import statistics
import time

import jax
import numpy as np

from jaxvision import data
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.state import ModelState


def split_predictions(predictor: Predictor, source, batch_size: int, variables=None):
    """([N] predicted classes, [N] labels) of `predictor` (its `variables` unless given) on
    every example of `source`, preprocessed as its run evaluated."""
    task = predictor.task
    variables = predictor.variables if variables is None else variables

    @jax.jit
    def classes(variables, images):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return task.logits({task.trained: model}, images).argmax(-1)

    predicted, labels = [], []
    transform = eval_transform(predictor.record)
    for batch in data.eval_batches(source, transform, global_batch_size=batch_size):
        mask = np.asarray(batch["mask"])
        predicted.append(np.asarray(classes(variables, batch["image"]))[mask])
        labels.append(np.asarray(batch["label"])[mask])
    return np.concatenate(predicted), np.concatenate(labels)


def images_per_s(predictors: dict, batch: int, repeats: int = 5) -> dict:
    """{name: prediction speed} of each Predictor's compiled forward on one bucket of `batch`
    images (already preprocessed: the network and its softmax, not decoding): the median of
    `repeats` rounds, each timing every predictor once in turn, so that load from other
    processes on a shared machine falls on all of them alike."""
    timed = {}
    for name, predictor in predictors.items():
        size, channels = predictor.image_size, predictor.record["channels"]
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8)
        inputs = jax.device_put(predictor.preprocess(list(images))[0])
        timed[name] = (predictor, inputs)

    def run(name) -> float:
        predictor, inputs = timed[name]
        start = time.perf_counter()
        jax.block_until_ready(predictor._forward(predictor.variables, inputs))
        return time.perf_counter() - start

    for name in timed:
        run(name)  # compilation
    times = {name: [] for name in timed}
    for _ in range(repeats):
        for name in timed:
            times[name].append(run(name))
    return {name: batch / statistics.median(t) for name, t in times.items()}


def write_workdir(out: str, source: str, record: dict, variables: dict, step: int, metrics: dict):
    """A workdir at `out` holding one model: `record` as model.json, `variables` (any tree of
    arrays) as the checkpoint of `step`, the source run's config.json (so a split of its data
    can be evaluated) and `metrics` as one metrics.jsonl record."""
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"--out {out} is not empty: give a new directory")
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(source, "config.json"), os.path.join(out, "config.json"))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(record, f, indent=1)
    key = record.get("model_key") or "model"
    state = {"models": {key: {"variables": jax.device_get(variables)}}, "step": np.int64(step)}
    checkpointer = Checkpointer(os.path.join(out, "checkpoints"), async_save=False)
    try:
        checkpointer.save(step, state, {"source": source}, force=True)
        checkpointer.wait()
    finally:
        checkpointer.close()
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
