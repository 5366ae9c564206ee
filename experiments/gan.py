"""Trains a DCGAN: data -> generator and discriminator, each with its optimizer, in one sharded
state -> alternating updates in the shared loop -> FID / KID, samples and a film of training.

  python -m experiments.gan --workdir=DIR [--config.conditional=False] [--config.k=v ...]

Defaults to experiments/configs/generation/dcgan_digits.py (a class-conditional DCGAN on the
embedded digits at 32x32); any classification dataset runs (`--config.dataset=folder
--config.data_dir=ROOT`, a TFDS
name). Rerunning the same command resumes exactly (both models, both optimizers, the EMA).
`jaxvision generate --workdir=DIR --num=64 [--label=3]` writes samples afterwards.
"""

from jaxvision import signals

signals.remember_sigterm()  # first: the imports below take seconds

import functools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import optax  # noqa: E402

from experiments import classification as cls  # noqa: E402
from jaxvision import cli, data  # noqa: E402
from jaxvision.errors import UserError  # noqa: E402
from jaxvision.evaluation import digits_fid, generative  # noqa: E402
from jaxvision.evaluation.samples import GanEvaluator  # noqa: E402
from jaxvision.models import generators  # noqa: E402
from jaxvision.models.dcgan import num_stages  # noqa: E402
from jaxvision.tasks.gan import GAN, LOSSES, GanOptions, GanUpdate, make_gan_train_step  # noqa: E402
from jaxvision.train import build, loop  # noqa: E402
from jaxvision.train.setup import NamedModel, make_run  # noqa: E402

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "generation", "dcgan_digits.py")


class IndexedSource(Sequence):
    """A source whose examples also carry their position, "index" (an eval fake's latent)."""

    def __init__(self, source: Sequence):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return {**self.source[index], "index": index}


def check_config(config) -> None:
    try:
        num_stages(config.image_size)
    except ValueError as e:
        raise UserError(f"{e} (set --config.image_size)") from None
    if config.gan_loss not in LOSSES:
        raise UserError(f"unknown gan_loss {config.gan_loss!r}: use one of {', '.join(LOSSES)}")
    for key in ("latent_dim", "g_width", "d_width"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise UserError(f"{key}={config[key]!r} must be a whole number >= 1")
    if config.optimizer != "adam":
        raise UserError(f"optimizer={config.optimizer!r}: GAN runs train with adam")
    if config.fid_features not in generative.FEATURE_KINDS:
        raise UserError(
            f"unknown fid_features {config.fid_features!r}: use one of "
            f"{', '.join(generative.FEATURE_KINDS)}"
        )


def feature_extractor(config, channels: int):
    """`uint8 images -> (features, digit logits or None)` for the evaluation: digits-FID or
    Inception pool3 features; the digits classifier reads the fakes of a digits GAN (the
    conditional accuracy)."""
    digits_shape = (config.image_size, channels) == (32, 1)
    if config.fid_features == "digits" and not digits_shape:
        raise UserError(
            f"digits-FID features take 32x32 grey images, not {config.image_size}x"
            f"{config.image_size}x{channels}: set --config.fid_features=inception with "
            "--config.fid_weights=<pytorch-fid Inception .safetensors>"
        )
    features = generative.feature_function(config.fid_features, config.fid_weights or None)
    classify = digits_fid.digits_classify if config.dataset == "digits" and digits_shape else None
    return lambda images: (features(images), None if classify is None else classify(images))


def generator_record(config, dataset, channels: int) -> dict:
    """What `<workdir>/model.json` keeps for jaxvision generate."""
    return {
        "task": "gan",
        "model": config.model,
        "model_key": "generator",
        "generator": {
            "image_size": config.image_size,
            "channels": int(channels),
            "latent_dim": config.latent_dim,
            "width": config.g_width,
            "num_classes": int(dataset.num_classes) if config.conditional else 0,
        },
        "class_names": [str(n) for n in dataset.class_names],
        "dtype": config.dtype,
    }


def setup(config) -> loop.Run:
    """Mesh, input, the two models and their optimizers, the GAN task, and the run over them."""
    check_config(config)
    mesh = build.mesh(config)

    # Input: images resized to the generator's size; evaluation examples carry their index.
    dataset = cls.open_dataset(config)
    channels = dataset.train[0]["image"].shape[-1]
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    train_transform = data.TrainTransform(config.image_size, "none", config.flip)
    eval_transform = data.EvalTransform(config.image_size, 1.0)
    splits = {"train": IndexedSource(dataset.train), "test": IndexedSource(dataset.test)}

    # Models, optimizers, the task.
    num_classes = int(dataset.num_classes) if config.conditional else 0
    dtype = build.dtype(config.dtype)
    shared = dict(image_size=config.image_size, num_classes=num_classes, dtype=dtype)
    generator = generators.build(
        config.model,
        channels=channels,
        latent_dim=config.latent_dim,
        width=config.g_width,
        **shared,
    )
    discriminator = generators.discriminator(config.model, width=config.d_width, **shared)
    features = feature_extractor(config, channels)
    task = GAN(
        generator,
        discriminator,
        GanOptions(config.gan_loss, config.latent_dim, num_classes, config.seed + 1),
        features=features,
        evaluator_factory=lambda _: GanEvaluator(
            generative.GenerativeEvaluator(), conditional=num_classes > 0
        ),
    )

    def adam(lr):
        return optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2)

    g_tx = adam(config.learning_rate)
    d_tx = adam(config.d_learning_rate or config.learning_rate)
    train_step = make_gan_train_step(
        task, g_tx, d_tx, GanUpdate(config.ema_decay, config.ema_warmup)
    )

    # The run: both models with their optimizers (the generator with its EMA), laid out by the
    # same sharding rules.
    image_shape = (config.image_size, config.image_size, channels)
    return make_run(
        task,
        {
            "generator": NamedModel(task.init_generator, g_tx, ema=config.ema_decay > 0),
            "discriminator": NamedModel(
                lambda rng: task.init_discriminator(rng, image_shape), d_tx
            ),
        },
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
        predictor=generator_record(config, dataset, channels),
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
