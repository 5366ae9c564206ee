"""Evaluation: one pass over a split, its metrics, per-class reports and pictures.

Used by the training experiments after each evaluation and by `experiments.evaluate`.
"""

import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import data
from jaxvision.train import plots, steps
from jaxvision.train.metrics import per_class_report


class EvaluationStopped(Exception):
    """An evaluation pass abandoned on request (a preemption signal)."""


def weight_sets(state) -> list[tuple[str, object]]:
    """What to evaluate: ("eval", state), plus ("eval_ema", the state with the EMA weights) when
    the run keeps an exponential moving average."""
    sets = [("eval", state)]
    if state.ema_params is not None:
        sets.append(("eval_ema", state.replace(params=state.ema_params)))
    return sets


def evaluate_split(
    eval_step,
    state,
    source: Sequence,
    *,
    sharding,
    batch_size: int,
    image_size: int,
    crop_ratio: float,
    worker_count: int = 0,
    prefix: str = "eval",
    should_stop: Callable[[int], bool] | None = None,
) -> tuple[dict, np.ndarray | None]:
    """One pass of the jitted `eval_step` over `source`.

    should_stop: asked with the batch index after each batch (a preemption watch); True
    abandons the pass with EvaluationStopped.
    Returns ({"<prefix>/loss", "<prefix>/top1", "<prefix>/top5"}, the [K, K] confusion counts or
    None when the step does not count them).
    """
    sums = None
    batches = data.eval_batches(
        source,
        global_batch_size=batch_size,
        image_size=image_size,
        crop_ratio=crop_ratio,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=worker_count,
    )
    for index, local_batch in enumerate(batches, 1):
        out = eval_step(state, data.make_global_batch(local_batch, sharding))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        if should_stop is not None and should_stop(index):
            raise EvaluationStopped(f"{prefix} stopped after {index} batches")
    sums = jax.device_get(sums)
    confusion = np.asarray(sums["confusion"], np.int64) if "confusion" in sums else None
    return steps.summarize_eval(sums, prefix), confusion


def write_reports(
    workdir: str,
    step: int,
    prefix: str,
    confusion: np.ndarray,
    class_names: Sequence[str],
) -> dict:
    """Per-class precision/recall/F1 to `<workdir>/eval/<prefix>_step<N>.json` and the confusion
    matrix to `<workdir>/plots/confusion_<prefix>.png` (process 0 only).

    Returns the macro averages as metrics: {"<prefix>/macro_precision", ...recall, ...f1}.
    """
    report = per_class_report(confusion)
    macro = {f"{prefix}/macro_{k}": report[f"macro_{k}"] for k in ("precision", "recall", "f1")}
    if jax.process_index() != 0:
        return macro
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    per_class = {
        name: {
            "precision": float(report["precision"][i]),
            "recall": float(report["recall"][i]),
            "f1": float(report["f1"][i]),
            "support": int(report["support"][i]),
        }
        for i, name in enumerate(class_names)
    }
    with open(os.path.join(workdir, "eval", f"{prefix}_step{step}.json"), "w") as f:
        json.dump(
            {"step": step, **macro, "per_class": per_class, "confusion": confusion.tolist()}, f
        )
    plots.plot_confusion(
        confusion,
        list(class_names),
        os.path.join(workdir, "plots", f"confusion_{prefix}.png"),
        title=f"{prefix}, step {step}",
    )
    return macro


def plot_training_curves(workdir: str) -> None:
    """`<workdir>/plots/curves.png` from `metrics.jsonl`: loss, accuracy and learning rate."""
    if jax.process_index() == 0:
        plots.plot_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "plots", "curves.png")
        )


def print_table(metrics: dict, report: dict | None = None, class_names=None) -> str:
    """A plain-text table of metrics (and per-class rows) for a terminal."""
    lines = [f"{name:<24} {value:.4f}" for name, value in sorted(metrics.items())]
    if report is not None:
        lines.append(f"{'class':<24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for i, name in enumerate(class_names):
            lines.append(
                f"{str(name)[:24]:<24} {report['precision'][i]:9.4f} {report['recall'][i]:9.4f}"
                f" {report['f1'][i]:9.4f} {int(report['support'][i]):8d}"
            )
    return "\n".join(lines)
