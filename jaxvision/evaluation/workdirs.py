"""Finished runs read back: their stored config, a split of their data, the metrics of their
weights, ensembles of them. The `jaxvision` commands that act on runs (evaluate, soup, quantize,
prune, explain-checks) share it."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import data, ensembles
from jaxvision.errors import UserError, listing
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.sharding import batch_sharding, batch_split, make_mesh, replicated
from jaxvision.state import ModelState
from jaxvision.train import reporting
from jaxvision.train.losses import topk_correct


def _as_config_value(value):
    """A config.json value as the ConfigDict held it: lists back to tuples (a JSON array was
    a tuple), nested objects as ConfigDicts."""
    if isinstance(value, list):
        return tuple(_as_config_value(v) for v in value)
    if isinstance(value, dict):
        return ml_collections.ConfigDict({k: _as_config_value(v) for k, v in value.items()})
    return value


def load_config(
    workdir: str, defaults: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
    """The run's config from `<workdir>/config.json`. With `defaults` (the training program's
    full config), the stored values go into it, so fields added after the run was trained keep
    their defaults and fields jaxvision no longer has are left out."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: --workdir must be a directory a training run wrote")
    with open(path) as f:
        stored = json.load(f)
    if defaults is None:
        return ml_collections.ConfigDict({k: _as_config_value(v) for k, v in stored.items()})
    config = defaults
    for key, value in stored.items():
        if key not in config:
            continue
        if isinstance(config[key], tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        if isinstance(config[key], ml_collections.ConfigDict):
            value = ml_collections.ConfigDict(value)
        config[key] = value
    return config


def open_run_dataset(config: ml_collections.ConfigDict) -> data.Dataset:
    """The dataset a run's stored `config` trained on, opened as its program opened it
    (a detection run with its dataset's options); notes about the data are printed."""
    detection = "detection" in config
    options = config.get("dataset_options") or {}
    options = options.to_dict() if isinstance(options, ml_collections.ConfigDict) else options
    options, note = data.sources.usable_options(config.dataset, options)
    if note:
        reporting.note(note)
    dataset = data.open_dataset(
        config.dataset,
        data_dir=config.get("data_dir"),
        train_split=config.get("train_split", "train"),
        test_split=config.get("test_split"),
        test_fraction=config.get("test_fraction", 0.2),
        strict=config.get("data_strict", False),
        options=options or None,
    )
    if detection:
        for line in dataset.notes:
            reporting.note(line)
    if dataset.skipped:
        what = "image" if detection else "unreadable image file"
        reporting.note(
            f"left out {reporting.plural(len(dataset.skipped), what)} of {config.data_dir}: "
            f"{listing(dataset.skipped)} (data_strict=True stops instead)"
        )
    return dataset


def split_source(workdir: str, split: str):
    """(the `split` ("test" or "train") of the run's data, the run's batch size)."""
    config = load_config(workdir)
    dataset = open_run_dataset(config)
    return dataset.test if split == "test" else dataset.train, config.batch_size


def _batches(predictor: Predictor, source, batch_size: int, mesh):
    """(host batch, the same on the mesh): padded eval batches of `source`, prepared as
    `predictor`'s run evaluated them."""
    split = batch_split(mesh)
    batch_size = -(-batch_size // split) * split
    transform = eval_transform(predictor.record)
    for local in data.eval_batches(source, transform, global_batch_size=batch_size):
        yield local, data.make_global_batch(local, batch_sharding(mesh))


def split_metrics(predictor: Predictor, variables, source, batch_size: int, name: str):
    """(metrics, evaluator) of `variables` in `predictor`'s model on `source`: the task's
    evaluator over one pass (classification: <name>/top1, ..., and a per-class report)."""
    mesh = make_mesh()
    task = predictor.task

    @jax.jit
    def outputs(variables, batch):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return task.eval_outputs({task.trained: model}, batch)

    variables = jax.device_put(variables, replicated(mesh))
    evaluator = task.evaluator(predictor.class_names)
    for local, batch in _batches(predictor, source, batch_size, mesh):
        evaluator.add(outputs(variables, batch), local)
    return evaluator.result(name), evaluator


def member_groups(predictors: list[Predictor]) -> list[list[int]]:
    """Members of one architecture and preprocessing (model.json) together."""
    groups = {}
    for i, p in enumerate(predictors):
        fields = ("model", "model_kwargs", "num_classes", "image_size", "crop_ratio", "mean", "std")
        key = json.dumps([p.record[k] for k in fields])
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def group_probs(predictors: list[Predictor], source, batch_size: int, mesh):
    """([M, N, K] probabilities, [N] labels) of members of one architecture on `source`: one
    vmapped forward per batch."""
    first = predictors[0]
    stacked = ensembles.stack([p.variables for p in predictors])

    def apply(variables, images):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return first.task.logits({first.task.trained: model}, images)

    forward = jax.jit(lambda v, images: ensembles.member_probs(apply, v, images))
    probs, labels = [], []
    for _, batch in _batches(first, source, batch_size, mesh):
        mask = np.asarray(batch["mask"])
        probs.append(np.asarray(forward(stacked, batch["image"]))[:, mask])
        labels.append(np.asarray(batch["label"])[mask])
    return np.concatenate(probs, axis=1), np.concatenate(labels)


def probability_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """top1, top5, nll and ece of [N, K] probabilities."""
    logits = jnp.log(jnp.clip(probs, 1e-12))
    return {
        "top1": float(topk_correct(logits, labels, 1).mean()),
        "top5": float(topk_correct(logits, labels, 5).mean()),
        "nll": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean()),
        "ece": ensembles.expected_calibration_error(probs, labels),
    }


def evaluate_ensemble(predictors: list[Predictor], source, batch_size: int) -> dict:
    """Each member's and the ensemble's metrics on `source`: {"member_0/top1", ...,
    "ensemble/top1", ...}. Each member sees the split preprocessed as it was trained."""
    first = predictors[0]
    if any(p.class_names != first.class_names for p in predictors):
        raise UserError(
            "ensemble members must share their classes: these were trained on different data"
        )
    mesh = make_mesh()
    probs = [None] * len(predictors)
    for group in member_groups(predictors):
        group_probs_, labels = group_probs([predictors[i] for i in group], source, batch_size, mesh)
        for i, member in zip(group, group_probs_, strict=True):
            probs[i] = member
    metrics = {}
    for i, member in enumerate(probs):
        metrics |= {f"member_{i}/{k}": v for k, v in probability_metrics(member, labels).items()}
    ensemble = np.mean(probs, axis=0)
    return metrics | {f"ensemble/{k}": v for k, v in probability_metrics(ensemble, labels).items()}
