"""Image classification: data -> sharded model -> train loop -> evaluation -> checkpoint.

The program behind `experiments.digits`, `experiments.resnet_digits`,
`experiments.resnet_imagenet` and `experiments.train`; any config with the same fields runs
here. `setup` reads top to bottom: mesh, input, model and optimizer, task, state and
shardings; the loop (resume, train, evaluate, checkpoint, stop) is the library's,
`jaxvision.train.loop`. Fork it to try an idea; the library never imports from `experiments/`.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import data, evaluation, models
from jaxvision.errors import UserError, listing
from jaxvision.sharding import (
    batch_sharding,
    batch_split,
    check_global_batch,
    make_mesh,
    param_specs,
    state_shardings,
)
from jaxvision.tasks.classification import Classification, LossOptions, Mixing
from jaxvision.train import loop, optim, reporting, steps
from jaxvision.train.state import (
    TrainState,
    abstract_params,
    init_model_state,
    init_train_state,
    logical_param_specs,
)


def dtype(name: str):
    try:
        return jnp.dtype(name)
    except TypeError:
        raise UserError(f"unknown dtype '{name}': use float32 or bfloat16") from None


def make_mesh_for(config):
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


def open_dataset(config) -> data.Dataset:
    dataset = data.open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_split=config.train_split,
        test_split=config.test_split,
        test_fraction=config.test_fraction,
        strict=config.data_strict,
    )
    if dataset.skipped:
        reporting.note(
            f"left out {reporting.plural(len(dataset.skipped), 'unreadable image file')} of "
            f"{config.data_dir}: {listing(dataset.skipped)} (data_strict=True stops instead)"
        )
    return dataset


def model_options(config) -> dict:
    """config.model_kwargs as `models.build` takes them: ViTs size their position embeddings
    for the input; options another model lacks (after --config.model=...) are dropped, and said
    so."""
    kwargs = config.model_kwargs.to_dict()
    options = models.options(config.model)
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


def make_optimizer(config, model, image_shape, total_steps: int, steps_per_epoch: float):
    """(tx, schedule, frozen) from the config. The learning rate scales linearly with the
    global batch."""
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
        moment_dtype=dtype(config.moment_dtype) if config.moment_dtype else None,
        lr_multipliers=lr_multipliers,
        frozen=frozen,
    )
    return tx, schedule, frozen


def loss_options(config, dataset) -> LossOptions:
    mixing = None
    if config.mixup_alpha or config.cutmix_alpha:
        mixing = Mixing(
            config.mixup_alpha, config.cutmix_alpha, config.mix_switch_prob, config.mix_prob
        )
    class_weights = None
    if config.class_weights:  # "balanced": K / (K * n_k), as scikit-learn's
        if config.class_weights != "balanced":
            raise UserError(f"unknown class_weights '{config.class_weights}': use 'balanced' or ''")
        labels = dataset.train.labels  # every source lists its labels without decoding images
        counts = np.bincount(np.asarray(labels), minlength=dataset.num_classes)
        class_weights = tuple(len(labels) / (dataset.num_classes * np.maximum(counts, 1)))
    return LossOptions(config.label_smoothing, mixing, class_weights)


def transforms(config):
    train = data.TrainTransform(
        config.image_size,
        config.crop,
        config.flip,
        config.pad,
        (config.randaugment_ops, config.randaugment_magnitude) if config.randaugment_ops else None,
        config.random_erasing,
    )
    return train, data.EvalTransform(config.image_size, config.eval_crop_ratio)


def evals(config, dataset) -> list[evaluation.Eval]:
    """config.evals: {name: {split: "test" | "train", every_steps}} -> what the loop evaluates;
    every_steps None takes config.eval_every_steps."""
    splits = {"test": dataset.test, "train": dataset.train}
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


def predictor_record(config, dataset, kwargs, channels, name="model") -> dict:
    """What `<workdir>/model.json` keeps for inference (jaxvision.predictor)."""
    return {
        "task": "classification",
        "model": config.model,
        "model_kwargs": kwargs,
        "model_key": name,
        "dtype": config.dtype,
        "num_classes": int(dataset.num_classes),
        "class_names": [str(n) for n in dataset.class_names],
        "image_size": config.image_size,
        "crop_ratio": config.eval_crop_ratio,
        "channels": int(channels),
        "mean": [float(v) for v in dataset.mean],
        "std": [float(v) for v in dataset.std],
    }


def setup(config: ml_collections.ConfigDict) -> loop.Run:
    """Mesh, input, model, optimizer, task and the state's structure and shardings."""
    mesh, data_sharding = make_mesh_for(config)

    # Input.
    dataset = open_dataset(config)
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    steps_per_epoch = len(dataset.train) / config.batch_size
    train_transform, eval_transform = transforms(config)

    # Model and optimizer.
    kwargs = model_options(config)
    model = models.build(
        config.model, num_classes=dataset.num_classes, dtype=dtype(config.dtype), **kwargs
    )
    image_shape = (config.image_size, config.image_size, channels)
    tx, schedule, frozen = make_optimizer(config, model, image_shape, total_steps, steps_per_epoch)

    # Task: the loss, eval outputs and evaluator of classification.
    task = Classification(
        model, mean=dataset.mean, std=dataset.std, loss=loss_options(config, dataset)
    )
    train_step = steps.make_train_step(
        task,
        tx,
        steps.UpdateOptions(
            config.microbatches, config.ema_decay, config.ema_warmup, frozen, schedule
        ),
    )

    # State and its shardings: parameters replicated, FSDP-sharded and/or tensor-parallel by
    # config.sharding; optimizer state follows its parameters.
    example = {"image": np.zeros((1, *image_shape), np.uint8)}

    def init(rng) -> TrainState:
        model_state = init_model_state(
            task.init_variables(example), tx, rng, ema=config.ema_decay > 0
        )
        return init_train_state({task.trained: model_state})

    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(init, rng)
    logical = logical_param_specs(model, image_shape) if "tensor" in config.sharding else None
    specs = param_specs(
        abstract_state.models[task.trained].params, mesh, config.sharding, logical_specs=logical
    )
    return loop.Run(
        mesh=mesh,
        data_sharding=data_sharding,
        task=task,
        train_source=dataset.train,
        train_transform=train_transform,
        eval_transform=eval_transform,
        evals=evals(config, dataset),
        class_names=dataset.class_names,
        total_steps=total_steps,
        train_step=train_step,
        init=init,
        rng=rng,
        abstract_state=abstract_state,
        state_sharding=state_shardings(abstract_state, mesh, {task.trained: specs}),
        schedule=schedule,
        predictor=predictor_record(config, dataset, kwargs, channels),
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)
