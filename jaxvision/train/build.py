"""A run's common parts, built from the config fields every training config has: the mesh, the
model's and the optimizer's option groups (read from the config once, `ModelOptions` and
`OptimizerOptions`), the optimizer and its schedule, the train step's update options, the
evaluations, the dataset. Experiment programs call these in their `setup`, so no program copies
them; what is specific to a task stays in its program. Wrappers other packages register
(`jaxvision.train.wrappers`: quantization-aware training, pruning masks) are applied here when
the config asks for them.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from jaxvision import data, evaluation, models
from jaxvision.errors import UserError, listing
from jaxvision.sharding import batch_split, check_global_batch, make_mesh
from jaxvision.train import optim, reporting, steps, wrappers
from jaxvision.train.state import abstract_params


def dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise UserError(f"unknown dtype '{name}': use float32 or bfloat16") from None


def dataset(config) -> data.Dataset:
    """The config's dataset (`dataset`, `data_dir`, its splits, `test_fraction`,
    `data_strict`) with the `dataset_options` it reads: a config written for one set run on
    another drops the options that set does not read, and says so; the dataset's own notes and
    the unreadable images it left out are reported."""
    options, note = data.sources.usable_options(config.dataset, config.dataset_options.to_dict())
    if note:
        reporting.note(note)
    opened = data.open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_split=config.train_split,
        test_split=config.test_split,
        test_fraction=config.test_fraction,
        strict=config.data_strict,
        options=options or None,
    )
    for line in opened.notes:
        reporting.note(line)
    if opened.skipped:
        reporting.note(
            f"left out {reporting.plural(len(opened.skipped), 'image')} of {config.data_dir}: "
            f"{listing(opened.skipped)} (data_strict=True stops instead)"
        )
    return opened


def mesh(config):
    """The mesh (every device on the data axis unless the config says otherwise), after checking
    that the batch splits over it."""
    mesh = make_mesh([tuple(axis) for axis in config.mesh])
    check_global_batch(config.batch_size, mesh)
    if config.microbatches < 1 or config.batch_size % (config.microbatches * batch_split(mesh)):
        raise UserError(
            f"batch_size={config.batch_size} does not split into microbatches="
            f"{config.microbatches} of a multiple of {batch_split(mesh)} devices: choose "
            "batch_size as a multiple of microbatches x devices"
        )
    return mesh


def model_options(config, registry=models) -> dict:
    """config.model_kwargs as `registry.build` takes them (`registry`: jaxvision.models, or
    jaxvision.models.detection for detectors): ViTs size their position embeddings for the
    input; options another model lacks (after --config.model=...) are dropped, and said so."""
    kwargs = config.model_kwargs.to_dict()
    options = registry.options(config.model)
    if "image_size" in options:
        kwargs.setdefault("image_size", config.image_size)
    if config.remat:
        if "remat" not in options:
            raise UserError(f"model '{config.model}' has no remat option: set remat=False")
        kwargs["remat"] = True
    ignored = sorted(set(kwargs) - set(options))
    if ignored:
        reporting.note(f"{config.model} has no option {', '.join(ignored)}: ignored")
    return {k: v for k, v in kwargs.items() if k not in ignored}


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The model as the config names it: `name` in a registry (jaxvision.models, or
    jaxvision.models.detection), `kwargs` as its `build` takes them (`model_options`), the
    compute `dtype` and the registered model wrappers the config asks for ((field, value):
    quantization-aware training)."""

    name: str
    kwargs: dict
    dtype: Any
    wrappers: tuple = ()

    @classmethod
    def from_config(cls, config, registry=models) -> "ModelOptions":
        return cls(
            config.model,
            model_options(config, registry),
            dtype(config.dtype),
            wrappers.requested(config, wrappers.MODEL_WRAPPERS),
        )

    def build(self, registry, num_classes: int) -> nn.Module:
        """The model `registry.build` makes, through the requested wrappers."""
        model = registry.build(self.name, num_classes=num_classes, dtype=self.dtype, **self.kwargs)
        return wrappers.wrap_model(model, self.wrappers)


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
    """The optimizer and its schedule as the config gives them (`from_config`, the one place
    that reads them). learning_rate: at the global batch (config.learning_rate x batch_size /
    lr_batch_base); linear_probe: the classifier module that alone learns (freeze_backbone),
    else None; wrappers: the registered optimizer wrappers the config asks for ((field, value):
    pruning masks)."""

    name: str
    learning_rate: float
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    lr_end_factor: float = 0.0
    warmup_bias_lr: float = 0.0
    warmup_momentum: float | None = None
    step_boundaries: tuple = (0.3, 0.6, 0.9)
    weight_decay: float = 0.0
    weight_decay_mode: str = "decoupled"
    momentum: float = 0.9
    nesterov: bool = True
    grad_clip_norm: float | None = None
    moment_dtype: str = ""
    layer_decay: float = 0.0
    model: str = ""  # the config's model name, for messages
    linear_probe: str | None = None
    wrappers: tuple = ()

    @classmethod
    def from_config(cls, config) -> "OptimizerOptions":
        return cls(
            name=config.optimizer,
            learning_rate=config.learning_rate * config.batch_size / config.lr_batch_base,
            schedule=config.schedule,
            warmup_epochs=config.warmup_epochs,
            lr_end_factor=config.get("lr_end_factor", 0.0),
            warmup_bias_lr=config.get("warmup_bias_lr", 0.0),
            warmup_momentum=config.get("warmup_momentum"),
            step_boundaries=tuple(config.step_boundaries),
            weight_decay=config.weight_decay,
            weight_decay_mode=config.weight_decay_mode,
            momentum=config.momentum,
            nesterov=config.nesterov,
            grad_clip_norm=config.grad_clip_norm,
            moment_dtype=config.moment_dtype,
            layer_decay=config.layer_decay,
            model=config.model,
            linear_probe=models.classifier(config.model) if config.freeze_backbone else None,
            wrappers=wrappers.requested(config, wrappers.OPTIMIZER_WRAPPERS),
        )


def optimizer(
    options: OptimizerOptions,
    model,
    image_shape,
    total_steps: int,
    steps_per_epoch: float,
    frozen=None,
):
    """(tx, schedule, frozen) from the optimizer's options. frozen: the task's own
    frozen-parameter predicate (a detector's frozen backbone layers); classifiers take theirs
    from freeze_backbone (`options.linear_probe`)."""
    warmup_steps = round(options.warmup_epochs * steps_per_epoch)
    if 0 < total_steps <= warmup_steps:
        # make_schedule ends such a warmup at the run's last step: say so, the run is short.
        reporting.note(
            f"warmup_epochs={options.warmup_epochs:g} is {warmup_steps:,} steps, not fewer than "
            f"the run's {total_steps:,}: the learning rate rises over the whole run to its peak "
            f"{options.learning_rate:g} at the last step and never decays; for a decay set "
            f"warmup_epochs below {total_steps / steps_per_epoch:.3g}"
        )
    schedule = optim.make_schedule(
        options.schedule,
        base_lr=options.learning_rate,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        boundaries=options.step_boundaries,
        end_factor=options.lr_end_factor,
    )
    lr_multipliers = None
    if options.layer_decay:  # ViT fine-tuning: earlier blocks learn more slowly
        if not hasattr(model, "depth"):
            raise UserError(
                f"layer_decay is for ViTs (blocks_0 ... blocks_N), model '{options.model}' has "
                "no such blocks: set layer_decay=0"
            )
        lr_multipliers = optim.layer_decay_multipliers(
            abstract_params(model, image_shape), options.layer_decay, model.depth
        )
    # Linear probe: only the model's own classifier learns.
    if options.linear_probe is not None:
        frozen = optim.frozen_except(options.linear_probe)
    tx = optim.make_optimizer(
        options.name,
        schedule,
        weight_decay=options.weight_decay,
        weight_decay_mode=options.weight_decay_mode,
        momentum=options.momentum,
        nesterov=options.nesterov,
        grad_clip_norm=options.grad_clip_norm,
        moment_dtype=dtype(options.moment_dtype) if options.moment_dtype else None,
        lr_multipliers=lr_multipliers,
        frozen=frozen,
        warmup_steps=warmup_steps,
        warmup_bias_lr=options.warmup_bias_lr,
        warmup_momentum=options.warmup_momentum,
    )
    # e.g. jaxvision prune's fine-tune: pruned weights stay zero.
    return wrappers.wrap_optimizer(tx, options.wrappers), schedule, frozen


def update_options(config, frozen, schedule) -> steps.UpdateOptions:
    """How the train step updates the trained model (micro-batches, EMA), with the optimizer's
    `frozen` and `schedule` (from `optimizer`)."""
    return steps.UpdateOptions(
        config.microbatches,
        config.ema_decay,
        config.ema_warmup,
        frozen,
        schedule,
        ema_ramp=config.get("ema_ramp", 0),
    )


def evals(config, splits: dict) -> list[evaluation.Eval]:
    """config.evals: {name: {split, every_steps}} -> what the loop evaluates; splits: {"test":
    source, "train": source}; every_steps None takes config.eval_every_steps."""
    specs = []
    for name, spec in config.evals.items():
        if spec.split not in splits:
            raise UserError(
                f"evals.{name}.split={spec.split!r}: use 'test' (the held-out split) or 'train'"
            )
        every = config.eval_every_steps if spec.get("every_steps") is None else spec.every_steps
        specs.append(evaluation.Eval(name, splits[spec.split], every))
    if not specs:
        raise UserError(
            "config.evals is empty: name at least one, e.g. {'eval': {'split': 'test'}}"
        )
    return specs
