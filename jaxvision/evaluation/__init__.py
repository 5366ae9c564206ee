"""Evaluation: passes over a split, each task's evaluator (metrics, per-class reports, pictures).

Used by the training loop after each evaluation and by `jaxvision evaluate`. A pass runs the
jitted eval step on padded batches and hands every batch's outputs to the task's evaluator,
which turns them into metrics on the host (sums for classification; per-example outputs of any
length for detection).
"""

import dataclasses
import os
from collections.abc import Callable, Sequence

import jax


class EvaluationStopped(Exception):
    """An evaluation pass abandoned on request (a preemption signal)."""


@dataclasses.dataclass(frozen=True)
class Eval:
    """One entry of `config.evals`: what to evaluate, how often, under which name.

    name: the metrics' prefix (`eval` -> `eval/top1`; with an EMA also `eval_ema/top1`).
    source: the split's examples. every_steps: cadence during training (0: at the end only).
    """

    name: str
    source: Sequence
    every_steps: int


def weight_sets(state, model: str) -> list[tuple[str, object]]:
    """What to evaluate: ("", state), plus ("_ema", the state with `model`'s EMA weights) when
    it keeps an exponential moving average."""
    sets = [("", state)]
    if state.models[model].ema_params is not None:
        ema = state.models[model].with_ema_weights()
        sets.append(("_ema", state.replace(models={**state.models, model: ema})))
    return sets


def evaluate_split(
    eval_step,
    state,
    source: Sequence,
    evaluator,
    *,
    transform,
    sharding,
    batch_size: int,
    worker_count: int = 0,
    should_stop: Callable[[int], bool] | None = None,
) -> None:
    """One pass of the jitted `eval_step` over `source` (examples prepared by `transform`),
    each batch's outputs added to `evaluator` with this process's host batch (what a picture
    of the results draws on).

    should_stop: asked with the batch index after each batch (a preemption watch); True
    abandons the pass with EvaluationStopped.
    """
    from jaxvision import data  # not at import: tasks use the evaluators without the input code

    batches = data.eval_batches(
        source,
        transform,
        global_batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=worker_count,
    )
    for index, local_batch in enumerate(batches, 1):
        outputs = eval_step(state, data.make_global_batch(local_batch, sharding))
        evaluator.add(outputs, local_batch)
        if should_stop is not None and should_stop(index):
            raise EvaluationStopped(f"evaluation stopped after {index} batches")


def plot_training_curves(workdir: str) -> None:
    """`<workdir>/plots/curves.png` from `metrics.jsonl`: loss, accuracy and learning rate."""
    from jaxvision.evaluation import plots

    if jax.process_index() == 0:
        plots.plot_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "plots", "curves.png")
        )


def metrics_table(metrics: dict) -> str:
    """A plain-text table of metrics for a terminal, one `name value` row each."""
    return "\n".join(f"{name:<24} {value:.4f}" for name, value in sorted(metrics.items()))
