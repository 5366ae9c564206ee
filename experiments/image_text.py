"""Trains an image-text model (SigLIP, CLIP): captioned images -> two towers sharded over the
mesh -> the contrastive loss in the shared loop -> zero-shot, retrieval and order evaluation.

  python -m experiments.image_text --workdir=DIR   # a small SigLIP on the captioned shapes
  python -m experiments.image_text \
      --config=experiments/configs/image_text/clip_tiny_shapes_captions.py --workdir=DIR

`setup` reads top to bottom: mesh, input (captioned records; images resized, never flipped),
model (sized for the tokenizer) and optimizer, the task (loss, zero-shot prompts, evaluators),
and the run (`jaxvision.train.setup.make_run`); the loop is the library's. Rerunning with the
same workdir resumes exactly.
"""

from jaxvision import signals

if __name__ == "__main__":
    signals.remember_sigterm()  # first: the imports below take seconds

import functools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402

from jaxvision import cli, data  # noqa: E402
from jaxvision.data import shapes_captions  # noqa: E402
from jaxvision.data.caption_transforms import (  # noqa: E402
    CaptionEvalTransform,
    CaptionTrainTransform,
    IndexedSource,
)
from jaxvision.errors import UserError  # noqa: E402
from jaxvision.evaluation.image_text import EVALUATORS  # noqa: E402
from jaxvision.models import image_text  # noqa: E402
from jaxvision.tasks.image_text import LOSSES, ImageText, ImageTextOptions  # noqa: E402
from jaxvision.train import build, loop, steps  # noqa: E402
from jaxvision.train.setup import NamedModel, make_run  # noqa: E402

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(__file__), "configs", "image_text", "siglip_tiny_shapes_captions.py"
)


def check_config(config) -> None:
    if config.flip:
        raise UserError("flip=True would make the captions' 'left of' false: set flip=False")
    if config.contrastive_loss and config.contrastive_loss not in LOSSES:
        raise UserError(
            f"unknown contrastive_loss {config.contrastive_loss!r}: use one of "
            f"{', '.join(LOSSES)} (or '' for the model's own)"
        )
    unknown = [e for e in config.image_text_evals if e not in EVALUATORS]
    if unknown:
        raise UserError(
            f"unknown image_text_evals {', '.join(unknown)}: use {', '.join(EVALUATORS)}"
        )
    if any("{}" not in t for t in config.zeroshot_templates) or not config.zeroshot_templates:
        raise UserError(
            "zeroshot_templates must each hold {} where the class text goes, e.g. ('a {}',)"
        )


def open_dataset(config) -> data.Dataset:
    dataset = build.dataset(config)
    if not hasattr(dataset.train, "tokenizer"):
        raise UserError(
            f"dataset {config.dataset!r} has no captions: use 'shapes_captions' or 'captions' "
            "(a folder with captions.jsonl or COCO captions JSON at data_dir)"
        )
    return dataset


def model_kwargs(config, tokenizer) -> dict:
    """config.model_kwargs, with the image size, and the text tower sized for the tokenizer:
    its vocabulary, its length, and pooling at the end token for CLIP's token layout (where
    the last position is padding)."""
    kwargs = {
        "image_size": config.image_size,
        "vocab_size": tokenizer.vocab_size,
        "context_length": tokenizer.length,
    }
    if tokenizer.pad_id != tokenizer.eos_id and image_text.family(config.model) == "siglip":
        kwargs["text_pool"] = "argmax"  # the end token is the largest id (CLIP's layout)
    return kwargs | config.model_kwargs.to_dict()


def class_tokens(config, dataset, tokenizer) -> np.ndarray | None:
    """[K * P, L]: each class's text in every zero-shot template (class-major); None when the
    data has no classes. The captioned shapes' class texts are their one-shape captions."""
    if not dataset.num_classes or "zeroshot" not in config.image_text_evals:
        return None
    names = [str(n).replace("_", " ") for n in dataset.class_names]
    if config.dataset == "shapes_captions":
        names = list(shapes_captions.CLASS_PROMPTS)
    texts = [template.format(name) for name in names for template in config.zeroshot_templates]
    return tokenizer(texts)


def predictor_record(config, dataset, kwargs) -> dict:
    """What `<workdir>/model.json` keeps for inference (the image tower's preprocessing)."""
    return {
        "task": "image_text",
        "model": config.model,
        "model_kwargs": kwargs,
        "model_key": "model",
        "dtype": config.dtype,
        "num_classes": int(dataset.num_classes),
        "class_names": [str(n) for n in dataset.class_names],
        "image_size": config.image_size,
        "crop_ratio": 1.0,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "channels": 3,
        "tokenizer": dict(config.dataset_options.to_dict()).get("tokenizer", ""),
        "text_length": int(dataset.train.tokenizer.length),
    }


def setup(config) -> loop.Run:
    """Mesh, input, model and optimizer, task, and the run over them."""
    check_config(config)
    mesh = build.mesh(config)

    # Input: (image, caption tokens) pairs; evaluation records keep what the evaluators read.
    dataset = open_dataset(config)
    tokenizer = dataset.train.tokenizer
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    train_transform = CaptionTrainTransform(config.image_size)
    eval_transform = CaptionEvalTransform(config.image_size, tokenizer)

    # Model and optimizer.
    kwargs = model_kwargs(config, tokenizer)
    model = image_text.build(config.model, dtype=build.dtype(config.dtype), **kwargs)
    image_shape = (config.image_size, config.image_size, 3)
    tx, schedule, frozen = build.optimizer(
        build.OptimizerOptions.from_config(config),
        model,
        image_shape,
        total_steps,
        len(dataset.train) / config.batch_size,
    )

    # Task: the contrastive loss over the mesh, the zero-shot prompts, the evaluators.
    options = ImageTextOptions(
        config.contrastive_loss, tuple(config.image_text_evals), config.retrieval_pairs
    )
    task = ImageText(
        model,
        mean=dataset.mean,
        std=dataset.std,
        mesh=mesh,
        class_tokens=class_tokens(config, dataset, tokenizer),
        options=options,
    )
    train_step = steps.make_train_step(task, tx, build.update_options(config, frozen, schedule))

    # The run: one model with two towers, laid out by the same rules as a classifier's.
    example = {
        "image": np.zeros((1, *image_shape), np.uint8),
        "tokens": np.zeros((1, tokenizer.length), np.int32),
    }
    splits = {"test": IndexedSource(dataset.test), "train": IndexedSource(dataset.train)}
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
        evals=build.evals(config, splits),
        class_names=dataset.class_names,
        total_steps=total_steps,
        schedule=schedule,
        predictor=predictor_record(config, dataset, kwargs),
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
