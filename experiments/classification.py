"""Image classification: data -> sharded model -> train loop -> evaluation -> checkpoint.

The program behind `experiments.digits`, `experiments.resnet_imagenet` and
`experiments.train`; any config with the same fields runs here. `setup` reads top to bottom:
mesh, input, model and optimizer, task, and the run (its state and shardings,
`jaxvision.train.setup.make_run`); the loop (resume, train, evaluate, checkpoint, stop) is the
library's, `jaxvision.train.loop`. Fork it to try an idea; the library never imports from
`experiments/`.
"""

import functools
import math

import ml_collections
import numpy as np

from experiments.configs.common import base_config as default_config  # noqa: F401 (tools)
from jaxvision import data, models
from jaxvision.errors import UserError, listing
from jaxvision.tasks.classification import Classification, LossOptions, Mixing
from jaxvision.train import build, loop, reporting, steps
from jaxvision.train.setup import NamedModel, make_run


def open_dataset(config) -> data.Dataset:
    options = config.get("dataset_options")  # a config for a set with options sets it
    dataset = data.open_dataset(
        config.dataset,
        data_dir=config.data_dir,
        train_split=config.train_split,
        test_split=config.test_split,
        test_fraction=config.test_fraction,
        strict=config.data_strict,
        options=options.to_dict() if options else None,
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
    """Mesh, input, model and optimizer, task, and the run over them."""
    mesh = build.mesh(config)

    # Input.
    dataset = open_dataset(config)
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    steps_per_epoch = len(dataset.train) / config.batch_size
    train_transform, eval_transform = transforms(config)

    # Model and optimizer. Quantization-aware training (int8 in the forward) and pruning masks
    # are jaxvision.compress's wrappers, registered when its training module is imported.
    if config.get("quantize_training") or config.get("prune_masks"):
        import jaxvision.compress.training  # noqa: F401

    model_options = build.ModelOptions.from_config(config)
    model = model_options.build(models, num_classes=dataset.num_classes)
    image_shape = (config.image_size, config.image_size, channels)
    tx, schedule, frozen = build.optimizer(
        build.OptimizerOptions.from_config(config), model, image_shape, total_steps, steps_per_epoch
    )

    # Task: the loss, eval outputs and evaluator of classification.
    task = Classification(
        model, mean=dataset.mean, std=dataset.std, loss=loss_options(config, dataset)
    )
    train_step = steps.make_train_step(task, tx, build.update_options(config, frozen, schedule))

    # The run: the trained model's state laid out by config.sharding (replicated, FSDP and/or
    # tensor-parallel), its optimizer state following its parameters.
    example = {"image": np.zeros((1, *image_shape), np.uint8)}
    return make_run(
        task,
        {task.trained: NamedModel(task.init_variables(example), tx, ema=config.ema_decay > 0)},
        mesh=mesh,
        sharding=config.sharding,
        seed=config.seed,
        train_step=train_step,
        train_source=dataset.train,
        train_transform=train_transform,
        eval_transform=eval_transform,
        evals=build.evals(config, {"test": dataset.test, "train": dataset.train}),
        class_names=dataset.class_names,
        total_steps=total_steps,
        schedule=schedule,
        predictor=predictor_record(config, dataset, model_options.kwargs, channels),
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)
