"""The training loop every task shares: resume or init, train, log, evaluate, checkpoint, stop.

An experiment program builds a `Run` from its config (mesh, data, task, optimizer, state layout)
and hands it to `train_and_evaluate`, which owns the rest: the workdir lock, resuming from the
newest readable checkpoint or starting fresh (`init_from`), metric sums between log lines, the
log / eval / checkpoint cadence, preemption, the non-finite guard, the final evaluation and the
`final:` line. However a run ends (an error, Ctrl-C, a full disk), a checkpoint being written
completes, and the last complete one stays the latest.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from jaxvision import config_checks, data, evaluation
from jaxvision import workdir as workdirs
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.sharding import abstract_like, replicated
from jaxvision.train import guards, profiling, reporting, steps
from jaxvision.train.init_from import init_model_from
from jaxvision.train.state import (
    TrainState,
    count_params,
    from_legacy_layout,
    legacy_layout,
)


@dataclasses.dataclass
class Run:
    """What a run is made of before any state exists; training and evaluation share it.

    task: the task (jaxvision.tasks): its trained model `task.trained`, loss, eval outputs and
        evaluator. train_step: the unjitted `(state, batch) -> (state, metrics)`.
    init: `rng -> TrainState`; abstract_state / state_sharding: its structure and layout.
    train_transform / eval_transform: the host-side preparation of one example.
    evals: what to evaluate, by name (`config.evals`); class_names: for the reports.
    predictor: what `<workdir>/model.json` records for inference without the training data.
    load_pretrained: `state -> state`, the weights of models the run does not train.
    """

    mesh: Mesh
    data_sharding: NamedSharding
    task: Any
    train_source: Sequence
    train_transform: Any
    eval_transform: Any
    evals: list[evaluation.Eval]
    class_names: Sequence[str]
    total_steps: int
    train_step: Callable
    init: Callable[[jax.Array], TrainState]
    rng: jax.Array
    abstract_state: TrainState
    state_sharding: TrainState
    schedule: Callable | None = None
    predictor: dict = dataclasses.field(default_factory=dict)
    # Fills a fresh state's other models from trained weights (a distillation teacher); on
    # resume they come back from the checkpoint with the rest.
    load_pretrained: Callable[[TrainState], TrainState] | None = None


def _every(step: int, interval: int) -> bool:
    """True on multiples of `interval`; never when it is 0 (off)."""
    return interval > 0 and step % interval == 0


def evaluate(run: Run, eval_step, state, config, workdir, evals, should_stop=None) -> dict:
    """Evaluates `evals` (and the EMA weights, if kept) on their splits; writes the reports and
    plots; returns the metrics: <name>/* and <name>_ema/*. `should_stop(batch)` may abandon it
    (evaluation.EvaluationStopped)."""
    metrics = {}
    for spec in evals:
        for suffix, weights in evaluation.weight_sets(state, run.task.trained):
            evaluator = run.task.evaluator(run.class_names)
            evaluation.evaluate_split(
                eval_step,
                weights,
                spec.source,
                evaluator,
                transform=run.eval_transform,
                sharding=run.data_sharding,
                batch_size=config.batch_size,
                worker_count=config.worker_count,
                should_stop=should_stop,
            )
            metrics |= evaluator.result(spec.name + suffix, workdir=workdir, step=int(state.step))
    return metrics


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, setup: Callable[..., Run]
) -> dict:
    """Trains the run `setup(config)` builds in `workdir`, resuming from its latest checkpoint;
    returns (and prints as `final: {json}`) the final evaluation."""
    try:
        with contextlib.ExitStack() as cleanup:
            # Watched from the start: a SIGTERM during setup or compilation stops after the
            # first step (one during the imports is handed over by jaxvision.signals).
            preemption = guards.PreemptionWatch()
            cleanup.callback(preemption.restore_handlers)
            if config.init_from is None:  # a fine-tuning config leaves the weights to the user
                raise UserError(
                    "this config fine-tunes pretrained weights: set --config.init_from to a "
                    ".safetensors / .npz file or another run's workdir (--config.init_from= "
                    f"trains {config.model} from scratch)"
                )
            config_checks.check_training_config(config)
            lock = workdirs.open_workdir(workdir)  # one run per workdir
            if lock is not None:
                cleanup.callback(lock.release)
            return _train_and_evaluate(config, workdir, setup, preemption, cleanup)
    except Exception as e:
        explained = workdirs.out_of_resources(e, workdir)  # a full disk, device memory
        if explained is None:
            raise
        raise explained from None


def _restore_or_init(run: Run, config, checkpointer: Checkpointer, workdir: str):
    """(state, checkpoint meta, what was loaded): the newest readable checkpoint, or a fresh
    state. A rerun that asks for another model, data or seed is refused before anything is
    written. What was loaded is keyword arguments of `guards.NonFiniteWatch` (empty for a
    fresh state): a loss that is not finite right after points at the checkpoint or file."""
    if checkpointer.latest_step() is None:
        state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
        if config.init_from:
            name = run.task.trained
            model = init_model_from(
                config.init_from,
                config.model,
                state.models[name],
                run.state_sharding.models[name],
                new_head=config.init_new_head,
                heads=run.task.head_paths,
            )
            state = state.replace(models={**state.models, name: model})
        if run.load_pretrained is not None:
            state = run.load_pretrained(state)
        if not config.init_from:
            return state, {}, {}
        loaded = {
            "loaded": f"the weights of --config.init_from={config.init_from}",
            "advice": "check that file: it may hold NaN or huge values, or be for another model",
        }
        return state, {}, loaded
    stored = workdirs.stored_config(workdir)
    if stored is not None:
        workdirs.check_resume(stored, config, checkpointer.directory)
    abstract = abstract_like(run.abstract_state, run.state_sharding)
    saved = checkpointer.newest_item_metadata()
    legacy = saved is not None and "params" in saved
    if legacy:  # written before runs held named models: read into the old layout
        abstract = legacy_layout(abstract)
    state, meta, skipped = checkpointer.restore_newest_readable(abstract)
    if legacy:
        state = from_legacy_layout(state)
    # Older checkpoints keep dataset, batch_size and seed under "data".
    workdirs.check_resume(meta.get("run") or meta.get("data", {}), config, checkpointer.directory)
    for line in skipped:
        reporting.note(f"skipped a damaged checkpoint, {line}: kept as <step>.damaged")
    step = int(state.step)
    reporting.note(f"resumed from {checkpointer.directory} at step {step}")
    loaded = {
        "loaded": f"the checkpoint at step {step} in {checkpointer.directory}",
        "loaded_at": step,
        "advice": (
            f"move {os.path.join(checkpointer.directory, str(step))} aside and rerun to resume "
            "from an older checkpoint, or start over with a new --workdir"
        ),
    }
    return state, meta, loaded


def _train_and_evaluate(config, workdir: str, setup, preemption, cleanup) -> dict:
    start_time = time.time()
    run = setup(config)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
    )
    cleanup.callback(checkpointer.close)  # whatever ends the run, an in-flight save completes
    log = reporting.MetricsLog(workdir, total_steps=run.total_steps)
    cleanup.callback(log.close)
    state, meta, loaded = _restore_or_init(run, config, checkpointer, workdir)
    workdirs.write_config(workdir, config)  # the resolved config, next to its checkpoints
    write_predictor_record(workdir, run.predictor, program_name(setup))
    first_step = int(state.step)
    # Entries past the resume point come from a run that stopped before its next checkpoint
    # (all of them, when it stopped before the first): the log reads as one uninterrupted run.
    log.truncate_after(first_step)
    mesh = run.mesh
    reporting.note(
        f"{config.model}: {count_params(state.models[run.task.trained].params):,} parameters; "
        f"{reporting.plural(jax.device_count(), 'device')}, mesh {dict(mesh.shape)}; "
        f"{run.total_steps} steps of {config.batch_size} images"
    )
    finished = _logged_final(log, first_step, run.total_steps, [e.name for e in run.evals])
    if finished is not None:  # rerun of a finished run: report it, add nothing
        final = {"step": first_step, "elapsed_s": round(time.time() - start_time, 1), **finished}
        reporting.print_final(final)
        return final

    # Steps, jitted over the mesh.
    train_step = steps.jit_train_step(run.train_step, mesh, run.state_sharding, run.data_sharding)
    eval_step = steps.jit_eval_step(
        steps.make_eval_step(run.task), mesh, run.state_sharding, run.data_sharding
    )

    # The batch for step s depends only on (seed, s), so a resumed run sees the same data.
    batches = data.train_batches(
        run.train_source,
        run.train_transform,
        global_batch_size=config.batch_size,
        seed=config.seed,
        start_step=first_step,
        num_steps=run.total_steps - first_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=config.worker_count,
        repeats=config.repeated_augmentation,
    )
    log.start_timer(first_step)
    # Train metrics are summed on the device between log lines; the partial sums travel in the
    # checkpoint so that a resumed run logs exactly what an uninterrupted one would have. One
    # jitted add for all of them: one dispatch a step, compiled during the first step (a compile
    # at step 2 would make the host wait), always on the metrics' own layout.
    add_metrics = jax.jit(lambda sums, metrics: jax.tree.map(jnp.add, sums, metrics))
    metric_sums = {
        k: jax.make_array_from_callback((), replicated(mesh), lambda _, v=v: np.float32(v))
        for k, v in meta.get("metric_sums", {}).items()
    } or None
    metric_steps = meta.get("metric_steps", 0)

    def checkpoint_meta(step):
        sums = jax.device_get(metric_sums) if metric_sums else {}
        return {
            # Where the input stands: batch s is a pure function of the run's data, batch size
            # and seed (the record) and of s.
            "run": workdirs.resume_record(config),
            "data": {"next_step": step},
            "metric_sums": {k: float(v) for k, v in sums.items()},
            "metric_steps": metric_steps,
        }

    def stopped(step: int, during: str = "") -> dict:
        checkpointer.close()
        reporting.note(
            f"stopped at step {step}/{run.total_steps}{during} on {preemption.signal_name}: "
            f"checkpoint saved in {checkpointer.directory}; rerun the same command to continue"
        )
        return {"step": step, "stopped": preemption.signal_name}

    # Between log lines nothing here waits for the device: metrics stay device arrays (summed,
    # and watched for non-finite values) until a log line, an evaluation or a checkpoint
    # fetches them; the host runs ahead and dispatches step s + 1 while step s computes
    # (tests/train/test_loop_sync.py).
    nonfinite = guards.NonFiniteWatch(**loaded)
    profiler = profiling.StepProfiler(
        profiling.parse_steps(config.get("profile_steps")), os.path.join(workdir, "profile")
    )
    cleanup.callback(profiler.close)
    zeros = None  # the sums of a new log window, on the metrics' layout
    for step in range(first_step + 1, run.total_steps + 1):
        with profiler.step(step):
            batch = data.make_global_batch(next(batches), run.data_sharding)
            state, metrics = train_step(state, batch)
        profiler.step_done(step, metrics, run.total_steps)
        if zeros is None:
            zeros = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype, device=m.sharding), metrics)
        # 0 + x == x exactly: a window that starts from zeros sums what it always has.
        metric_sums = add_metrics(zeros if metric_sums is None else metric_sums, metrics)
        if step == first_step + 1:  # compiled: time the steps from here
            jax.block_until_ready(metric_sums)
            log.first_step_done(step)
        nonfinite.add(step, metrics)
        metric_steps += 1
        if _every(step, config.log_every_steps) or step == run.total_steps:
            nonfinite.check()
            sums = jax.device_get(metric_sums)
            means = {k: float(v) / metric_steps for k, v in sums.items()}
            if run.schedule is not None:
                means["train/lr"] = float(run.schedule(step - 1))
            img_per_s, seconds_per_step = log.throughput(step, config.batch_size)
            log.write(step, {**means, "train/img_per_s": img_per_s})
            log.progress(step, means["train/loss"], img_per_s, seconds_per_step)
            metric_sums, metric_steps = None, 0
        due = [e for e in run.evals if _every(step, e.every_steps)]
        if due and step < run.total_steps:
            log.write(step, evaluate(run, eval_step, state, config, workdir, due))
            evaluation.plot_training_curves(workdir)
        stopping = preemption.should_stop(step) and step < run.total_steps
        if stopping or checkpointer.on_interval(step):
            nonfinite.check()  # never checkpoint a state that has gone non-finite
            checkpointer.save(step, state, checkpoint_meta(step), force=stopping)
        if stopping:
            return stopped(step)

    # Final checkpoint, then the final evaluation (a SIGTERM stops it: the rerun evaluates).
    final_step = int(state.step)
    nonfinite.check()
    checkpointer.save(final_step, state, checkpoint_meta(final_step), force=True)
    try:
        eval_metrics = evaluate(
            run, eval_step, state, config, workdir, run.evals, should_stop=preemption.should_stop
        )
    except evaluation.EvaluationStopped:
        return stopped(final_step, during=" (in the final evaluation)")
    log.write(final_step, eval_metrics)
    evaluation.plot_training_curves(workdir)
    log.close()
    checkpointer.close()
    final = {"step": final_step, "elapsed_s": round(time.time() - start_time, 1), **eval_metrics}
    reporting.print_final(final)
    return final


def program_name(setup: Callable) -> str | None:
    """The module of the program whose `setup` builds the run ("experiments.classification"),
    as `python -m` would find it again; None for a setup defined in a script run by path."""
    module = setup.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name if spec is not None else None
    return module


def write_predictor_record(workdir: str, record: dict, program: str | None = None) -> None:
    """`<workdir>/model.json`: what a Predictor needs besides the checkpoint (task, model,
    classes, preprocessing), so inference never opens the training data; and the training
    `program` (a module name), which tools that train the run further (jaxvision prune) run."""
    if record and program:
        record = {**record, "program": program}
    if record and jax.process_index() == 0:
        with open(os.path.join(workdir, "model.json.tmp"), "w") as f:
            json.dump(record, f, indent=1)
        os.replace(os.path.join(workdir, "model.json.tmp"), os.path.join(workdir, "model.json"))


def _logged_final(log, step: int, total_steps: int, names: list[str]) -> dict | None:
    """A finished run's final evaluation as logged, or None if the run has more to do (all
    processes agree: process 0 decides)."""
    prefixes = tuple(f"{name}{suffix}/" for name in names for suffix in ("", "_ema"))
    key = f"{names[0]}/" if names else "eval/"
    record = log.record_with(step, key) if step >= total_steps else None
    if jax.process_count() > 1:
        found = multihost_utils.broadcast_one_to_all(np.array(record is not None))
        if not bool(found):
            return None
        record = record or log.record_with(step, key)
    if record is None:
        return None
    return {k: v for k, v in record.items() if k.startswith(prefixes)}
