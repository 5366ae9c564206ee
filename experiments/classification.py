"""Image classification: data -> sharded model -> train loop -> evaluation -> checkpoint.

The program behind `experiments.digits`, `experiments.resnet_digits` and
`experiments.resnet_imagenet`; any config with the same fields runs here. It reads top to
bottom: workdir, mesh, input, model and optimizer, state and shardings, checkpoint resume, jitted
steps, loop, final evaluation. Fork it to try an idea; the library never imports from
`experiments/`.
"""

import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from jaxvision import config_checks, data, evaluation, models
from jaxvision import workdir as workdirs
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError, listing
from jaxvision.sharding import (
    abstract_like,
    batch_sharding,
    batch_split,
    check_global_batch,
    make_mesh,
    param_specs,
    state_shardings,
)
from jaxvision.train import guards, optim, reporting, steps
from jaxvision.train.init_from import init_state_from
from jaxvision.train.state import (
    TrainState,
    abstract_params,
    count_params,
    init_train_state,
    logical_param_specs,
)


def _dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise UserError(f"unknown dtype '{name}': use float32 or bfloat16") from None


def _every(step: int, interval: int) -> bool:
    """True on multiples of `interval`; never when it is 0 (off)."""
    return interval > 0 and step % interval == 0


def evaluate(eval_step, state, dataset, config, sharding, workdir: str, should_stop=None) -> dict:
    """Evaluates the weights (and their EMA, if kept) on the test split; writes the per-class
    reports and plots; returns the metrics: eval/* (and eval_ema/*), with macro P/R/F1.
    `should_stop(batch)` may abandon it (evaluation.EvaluationStopped)."""
    step = int(state.step)
    metrics = {}
    for prefix, weights_state in evaluation.weight_sets(state):
        scores, confusion = evaluation.evaluate_split(
            eval_step,
            weights_state,
            dataset.test,
            sharding=sharding,
            batch_size=config.batch_size,
            image_size=config.image_size,
            crop_ratio=config.eval_crop_ratio,
            worker_count=config.worker_count,
            prefix=prefix,
            should_stop=should_stop,
        )
        metrics |= scores
        metrics |= evaluation.write_reports(workdir, step, prefix, confusion, dataset.class_names)
    return metrics


def _mixing(config) -> dict | None:
    if not (config.mixup_alpha or config.cutmix_alpha):
        return None
    return {
        "mixup_alpha": config.mixup_alpha,
        "cutmix_alpha": config.cutmix_alpha,
        "switch_prob": config.mix_switch_prob,
        "prob": config.mix_prob,
    }


def _class_weights(config, dataset) -> np.ndarray | None:
    """ "balanced": weight K / (K * n_k) per class, as scikit-learn's compute_class_weight."""
    if not config.class_weights:
        return None
    if config.class_weights != "balanced":
        raise UserError(f"unknown class_weights '{config.class_weights}': use 'balanced' or ''")
    labels = dataset.train.labels  # every source lists its labels without decoding images
    counts = np.bincount(np.asarray(labels), minlength=dataset.num_classes)
    return len(labels) / (dataset.num_classes * np.maximum(counts, 1))


@dataclasses.dataclass
class Run:
    """What a run is made of before any state exists; training and evaluation share it."""

    mesh: Mesh
    data_sharding: NamedSharding
    dataset: data.Dataset
    total_steps: int
    model: nn.Module
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    init: Callable  # rng -> TrainState
    frozen: Callable | None  # parameter path -> bool; None: everything trains
    rng: jax.Array
    abstract_state: TrainState
    state_sharding: TrainState


def setup(config: ml_collections.ConfigDict) -> Run:
    """Mesh, input, model, optimizer and the state's structure and shardings, from `config`."""
    # Mesh: every device on the data axis unless the config says otherwise.
    mesh = make_mesh([tuple(axis) for axis in config.mesh])
    check_global_batch(config.batch_size, mesh)
    if config.microbatches < 1 or config.batch_size % (config.microbatches * batch_split(mesh)):
        raise UserError(
            f"batch_size={config.batch_size} does not split into microbatches="
            f"{config.microbatches} of a multiple of {batch_split(mesh)} devices: choose "
            "batch_size as a multiple of microbatches x devices"
        )
    data_sharding = batch_sharding(mesh)

    # Input.
    dataset = data.open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_split=config.train_split,
        test_split=config.test_split,
        test_fraction=config.test_fraction,
        strict=config.data_strict,
    )
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    steps_per_epoch = len(dataset.train) / config.batch_size

    # Model and optimizer. The learning rate scales linearly with the global batch.
    # Options another model lacks (after --config.model=...) are dropped, and said so.
    model_kwargs = config.model_kwargs.to_dict()
    options = models.options(config.model)
    if "image_size" in options:  # ViTs size their position embeddings for the input
        model_kwargs.setdefault("image_size", config.image_size)
    if config.remat:
        if "remat" not in options:
            raise UserError(f"model '{config.model}' has no remat option: set remat=False")
        model_kwargs["remat"] = True
    ignored = sorted(set(model_kwargs) - set(options))
    if ignored:
        reporting.note(f"{config.model} has no option {', '.join(ignored)}: ignored")
    model = models.build(
        config.model,
        num_classes=dataset.num_classes,
        dtype=_dtype(config.dtype),
        **{k: v for k, v in model_kwargs.items() if k not in ignored},
    )
    base_lr = config.learning_rate * config.batch_size / config.lr_batch_base
    schedule = optim.make_schedule(
        config.schedule,
        base_lr=base_lr,
        total_steps=total_steps,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        boundaries=tuple(config.step_boundaries),
    )
    image_shape = (config.image_size, config.image_size, channels)
    lr_multipliers = None
    if config.layer_decay:  # ViT fine-tuning: earlier blocks learn more slowly
        if not hasattr(model, "depth"):
            raise UserError(
                f"layer_decay is for ViTs (blocks_0 ... blocks_N), model '{config.model}' has "
                "no such blocks: set layer_decay=0"
            )
        lr_multipliers = optim.layer_decay_multipliers(
            abstract_params(model, image_shape), config.layer_decay, model.depth
        )
    # Linear probe: only the classifier learns.
    frozen = None
    if config.freeze_backbone:
        frozen = optim.frozen_except(models.classifier(config.model))
    tx = optim.make_optimizer(
        config.optimizer,
        schedule,
        weight_decay=config.weight_decay,
        weight_decay_mode=config.weight_decay_mode,
        momentum=config.momentum,
        nesterov=config.nesterov,
        grad_clip_norm=config.grad_clip_norm,
        moment_dtype=_dtype(config.moment_dtype) if config.moment_dtype else None,
        lr_multipliers=lr_multipliers,
        frozen=frozen,
    )

    # State and its shardings: parameters replicated, FSDP-sharded and/or tensor-parallel by
    # config.sharding; optimizer state follows its parameters.
    init = functools.partial(
        init_train_state, model, tx, image_shape=image_shape, ema=config.ema_decay > 0
    )
    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(init, rng)
    logical = logical_param_specs(model, image_shape) if "tensor" in config.sharding else None
    specs = param_specs(abstract_state.params, mesh, config.sharding, logical_specs=logical)
    state_sharding = state_shardings(abstract_state, mesh, specs)
    return Run(
        mesh=mesh,
        data_sharding=data_sharding,
        dataset=dataset,
        total_steps=total_steps,
        model=model,
        schedule=schedule,
        tx=tx,
        init=init,
        frozen=frozen,
        rng=rng,
        abstract_state=abstract_state,
        state_sharding=state_sharding,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config.model` on `config.dataset` in `workdir`, resuming from its latest
    checkpoint; returns (and prints as `final: {json}`) the final evaluation.

    However the run ends (an error, Ctrl-C, a full disk), a checkpoint being written completes
    before it returns, and the last complete one stays the latest.
    """
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
            return _train_and_evaluate(config, workdir, preemption, cleanup)
    except Exception as e:
        explained = workdirs.out_of_resources(e, workdir)  # a full disk, device memory
        if explained is None:
            raise
        raise explained from None


def _train_and_evaluate(config, workdir: str, preemption, cleanup: contextlib.ExitStack) -> dict:
    start_time = time.time()

    # Mesh, input, model, optimizer and the state's layout (shared with experiments.evaluate).
    run = setup(config)
    dataset, model, mesh = run.dataset, run.model, run.mesh
    if dataset.skipped:
        reporting.note(
            f"left out {reporting.plural(len(dataset.skipped), 'unreadable image file')} of "
            f"{config.data_dir}: {listing(dataset.skipped)} (data_strict=True stops instead)"
        )

    # Checkpoint: resume from the newest readable one in the workdir, or start fresh. A rerun
    # that asks for another model, data or seed is refused before anything is written.
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
    )
    cleanup.callback(checkpointer.close)  # whatever ends the run, an in-flight save completes
    log = reporting.MetricsLog(workdir, total_steps=run.total_steps)
    cleanup.callback(log.close)
    meta = {}
    if checkpointer.latest_step() is not None:
        stored = workdirs.stored_config(workdir)
        if stored is not None:
            workdirs.check_resume(stored, config, checkpointer.directory)
        state, meta, skipped = checkpointer.restore_newest_readable(
            abstract_like(run.abstract_state, run.state_sharding)
        )
        # Older checkpoints keep dataset, batch_size and seed under "data".
        workdirs.check_resume(
            meta.get("run") or meta.get("data", {}), config, checkpointer.directory
        )
        for line in skipped:
            reporting.note(f"skipped an unreadable checkpoint, {line}: kept as <step>.damaged")
        reporting.note(f"resumed from {checkpointer.directory} at step {int(state.step)}")
    else:
        state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
        if config.init_from:
            state = init_state_from(
                config.init_from,
                config.model,
                state,
                run.state_sharding,
                new_head=config.init_new_head,
            )
    workdirs.write_config(workdir, config)  # the resolved config, next to its checkpoints
    first_step = int(state.step)
    # Entries past the resume point come from a run that stopped before its next checkpoint
    # (all of them, when it stopped before the first): the log reads as one uninterrupted run.
    log.truncate_after(first_step)
    reporting.note(
        f"{config.model}: {count_params(state.params):,} parameters; "
        f"{reporting.plural(jax.device_count(), 'device')}, mesh {dict(mesh.shape)}; "
        f"{run.total_steps} steps of {config.batch_size} images"
    )
    finished = _logged_final(log, first_step, run.total_steps)
    if finished is not None:  # rerun of a finished run: report it, add nothing
        final = {"step": first_step, "elapsed_s": round(time.time() - start_time, 1), **finished}
        reporting.print_final(final)
        return final

    # Steps, jitted over the mesh.
    train_step = steps.jit_train_step(
        steps.make_train_step(
            model,
            run.tx,
            mean=dataset.mean,
            std=dataset.std,
            label_smoothing=config.label_smoothing,
            learning_rate=run.schedule,
            microbatches=config.microbatches,
            mixing=_mixing(config),
            class_weights=_class_weights(config, dataset),
            ema_decay=config.ema_decay,
            ema_warmup=config.ema_warmup,
            frozen=run.frozen,
        ),
        mesh,
        run.state_sharding,
        run.data_sharding,
    )
    eval_step = steps.jit_eval_step(
        steps.make_eval_step(model, mean=dataset.mean, std=dataset.std, confusion=True),
        mesh,
        run.state_sharding,
        run.data_sharding,
    )

    # Loop. The batch for step s depends only on (seed, s), so a resumed run sees the same data.
    batches = data.train_batches(
        dataset.train,
        global_batch_size=config.batch_size,
        image_size=config.image_size,
        crop=config.crop,
        flip=config.flip,
        pad=config.pad,
        seed=config.seed,
        start_step=first_step,
        num_steps=run.total_steps - first_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        worker_count=config.worker_count,
        randaugment=(config.randaugment_ops, config.randaugment_magnitude)
        if config.randaugment_ops
        else None,
        erasing=config.random_erasing,
        repeats=config.repeated_augmentation,
    )
    log.start_timer(first_step)
    # Train metrics are summed on the device between log lines; the partial sums travel in the
    # checkpoint so that a resumed run logs exactly what an uninterrupted one would have.
    metric_sums = {k: jnp.float32(v) for k, v in meta.get("metric_sums", {}).items()} or None
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

    nonfinite = guards.NonFiniteWatch()
    for step in range(first_step + 1, run.total_steps + 1):
        batch = data.make_global_batch(next(batches), run.data_sharding)
        state, metrics = train_step(state, batch)
        if step == first_step + 1:  # compiled: time the steps from here
            jax.block_until_ready(metrics)
            log.first_step_done(step)
        nonfinite.add(step, metrics)
        metric_sums = (
            metrics if metric_sums is None else jax.tree.map(jnp.add, metric_sums, metrics)
        )
        metric_steps += 1
        if _every(step, config.log_every_steps) or step == run.total_steps:
            nonfinite.check()
            sums = jax.device_get(metric_sums)
            means = {k: float(v) / metric_steps for k, v in sums.items()}
            means["train/lr"] = float(run.schedule(step - 1))
            img_per_s, seconds_per_step = log.throughput(step, config.batch_size)
            log.write(step, {**means, "train/img_per_s": img_per_s})
            log.progress(step, means["train/loss"], img_per_s, seconds_per_step)
            metric_sums, metric_steps = None, 0
        if _every(step, config.eval_every_steps) and step < run.total_steps:
            log.write(step, evaluate(eval_step, state, dataset, config, run.data_sharding, workdir))
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
            eval_step,
            state,
            dataset,
            config,
            run.data_sharding,
            workdir,
            should_stop=preemption.should_stop,
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


def _logged_final(log: reporting.MetricsLog, step: int, total_steps: int) -> dict | None:
    """A finished run's final evaluation as logged, or None if the run has more to do (all
    processes agree: process 0 decides)."""
    record = log.record_with(step, "eval/top1") if step >= total_steps else None
    if jax.process_count() > 1:
        found = multihost_utils.broadcast_one_to_all(np.array(record is not None))
        if not bool(found):
            return None
        record = record or log.record_with(step, "eval/top1")
    if record is None:
        return None
    return {k: v for k, v in record.items() if k.startswith(("eval/", "eval_ema/"))}
