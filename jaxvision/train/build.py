"""A run's common parts, built from the config fields every training config has: the mesh, the
model's options, the optimizer and its schedule, the evaluations. Experiment programs call these
in their `setup`, so no program copies them; what is specific to a task stays in its program.
"""

import jax.numpy as jnp
import optax

from jaxvision import evaluation, models
from jaxvision.errors import UserError
from jaxvision.sharding import batch_sharding, batch_split, check_global_batch, make_mesh
from jaxvision.train import optim, reporting
from jaxvision.train.state import abstract_params


def dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise UserError(f"unknown dtype '{name}': use float32 or bfloat16") from None


def mesh(config):
    """The mesh (every device on the data axis unless the config says otherwise) and the
    batch's sharding, after checking that the batch splits over them."""
    mesh = make_mesh([tuple(axis) for axis in config.mesh])
    check_global_batch(config.batch_size, mesh)
    if config.microbatches < 1 or config.batch_size % (config.microbatches * batch_split(mesh)):
        raise UserError(
            f"batch_size={config.batch_size} does not split into microbatches="
            f"{config.microbatches} of a multiple of {batch_split(mesh)} devices: choose "
            "batch_size as a multiple of microbatches x devices"
        )
    return mesh, batch_sharding(mesh)


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


def optimizer(config, model, image_shape, total_steps: int, steps_per_epoch: float, frozen=None):
    """(tx, schedule, frozen) from the config. The learning rate scales linearly with the
    global batch. frozen: the task's own frozen-parameter predicate (a detector's frozen
    backbone layers); classifiers take theirs from freeze_backbone."""
    base_lr = config.learning_rate * config.batch_size / config.lr_batch_base
    schedule = optim.make_schedule(
        config.schedule,
        base_lr=base_lr,
        total_steps=total_steps,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        boundaries=tuple(config.step_boundaries),
    )
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
    # Linear probe: only the model's own classifier learns.
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
        moment_dtype=dtype(config.moment_dtype) if config.moment_dtype else None,
        lr_multipliers=lr_multipliers,
        frozen=frozen,
    )
    if config.get("prune_masks"):  # jaxvision prune's fine-tune: pruned weights stay zero
        from jaxvision.compress.prune import keep_masked, load_masks

        tx = optax.chain(tx, keep_masked(load_masks(config.prune_masks)))
    return tx, schedule, frozen


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
