"""Image classification: data -> sharded model -> train loop -> evaluation -> checkpoint.

The program behind `experiments.digits`, `experiments.resnet_imagenet` and
`experiments.train`; any config with the same fields runs
here. `setup` reads top to bottom: mesh, input, model and optimizer, task, state and
shardings; the loop (resume, train, evaluate, checkpoint, stop) is the library's,
`jaxvision.train.loop`. Fork it to try an idea; the library never imports from `experiments/`.
"""

import functools
import math

import jax
import ml_collections
import numpy as np

from jaxvision import data, models
from jaxvision.errors import UserError, listing
from jaxvision.sharding import (
    param_specs,
    state_shardings,
)
from jaxvision.tasks.classification import Classification, LossOptions, Mixing
from jaxvision.train import build, loop, reporting, steps
from jaxvision.train.state import (
    TrainState,
    init_model_state,
    init_train_state,
    logical_param_specs,
)


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
    mesh, data_sharding = build.mesh(config)

    # Input.
    dataset = open_dataset(config)
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    steps_per_epoch = len(dataset.train) / config.batch_size
    train_transform, eval_transform = transforms(config)

    # Model and optimizer.
    kwargs = build.model_options(config)
    model = models.build(
        config.model, num_classes=dataset.num_classes, dtype=build.dtype(config.dtype), **kwargs
    )
    if config.get("quantize_training"):  # int8 in the forward: qwix's quantization-aware training
        from jaxvision.compress.quantize import qat_model

        model = qat_model(model)
    image_shape = (config.image_size, config.image_size, channels)
    tx, schedule, frozen = build.optimizer(config, model, image_shape, total_steps, steps_per_epoch)

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
        evals=build.evals(config, {"test": dataset.test, "train": dataset.train}),
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
