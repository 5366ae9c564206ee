"""Writes samples of a trained GAN (experiments.gan): one PNG per sample and a grid of them.

  jaxvision generate --workdir=DIR --num=64 [--label=3] [--seed=0] [--out=DIR/samples]

Uses the generator's EMA weights when the run kept them (--weights=trained for the trained ones).
A conditional generator draws `--label` (a class index or name), or cycles through the classes
without it; an unconditional one refuses --label. The same seed writes the same images.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from jaxvision import cli, predictor
from jaxvision.checkpoint import load_model
from jaxvision.errors import UserError
from jaxvision.evaluation.generative import to_uint8
from jaxvision.evaluation.samples import image_grid, write_png
from jaxvision.models import generators

FLAGS = flags.FLAGS


def requested_labels(label: str | None, num: int, class_names: list[str], conditional: bool):
    """[num] int32 class indices (None for an unconditional generator)."""
    if not conditional:
        if label is not None:
            raise UserError("this GAN is unconditional: drop --label")
        return None
    if label is None:
        return np.arange(num, dtype=np.int32) % len(class_names)
    if label in class_names:
        index = class_names.index(label)
    elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
        index = int(label)
    else:
        raise UserError(
            f"--label={label} is not a class of this GAN: use 0..{len(class_names) - 1} or a "
            f"name ({', '.join(class_names[:10])}{'...' if len(class_names) > 10 else ''})"
        )
    return np.full((num,), index, np.int32)


def generate(workdir: str, num: int, label: str | None, seed: int, weights: str = "ema"):
    """uint8 [num, S, S, C] samples and their labels ([num] or None) from `workdir`'s generator."""
    if num < 1:
        raise UserError(f"--num={num}: ask for at least one sample")
    record = predictor.read_record(workdir)
    if record.get("task") != "gan":
        raise UserError(f"{workdir} is a {record.get('task')} run, not a GAN: point to one")
    generator = generators.build(record.get("model", "dcgan"), **record["generator"])
    found, step, _ = load_model(workdir, None, record["model_key"])
    variables = found["variables"]
    if weights == "ema" and found["ema_params"] is not None:
        variables = {**variables, "params": found["ema_params"]}
    labels = requested_labels(label, num, record["class_names"], generator.num_classes > 0)
    z = jax.random.normal(jax.random.PRNGKey(seed), (num, generator.latent_dim))
    images = jax.jit(lambda v, z, y: to_uint8(generator.apply(v, z, y, train=False)))(
        variables, z, None if labels is None else jnp.asarray(labels)
    )
    return np.asarray(images), labels, step


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other programs share names)."""
    flags.DEFINE_string("workdir", None, "a trained GAN run's workdir")
    flags.DEFINE_integer("num", 64, "how many samples")
    flags.DEFINE_string("label", None, "class index or name (conditional GANs)")
    flags.DEFINE_integer("seed", 0, "the latents' seed")
    flags.DEFINE_string("out", None, "output folder (default: <workdir>/samples)")
    flags.DEFINE_enum("weights", "ema", ["ema", "trained"], "which generator weights")


def main(argv):
    del argv
    try:
        if not FLAGS.workdir:
            raise UserError("set --workdir to a trained GAN run's workdir")
        images, labels, step = generate(
            FLAGS.workdir, FLAGS.num, FLAGS.label, FLAGS.seed, FLAGS.weights
        )
    except UserError as e:
        cli.fail(str(e))
    out = FLAGS.out or os.path.join(FLAGS.workdir, "samples")
    for i, image in enumerate(images):
        name = f"{i:04d}" + ("" if labels is None else f"_class{labels[i]}")
        write_png(os.path.join(out, f"{name}.png"), image)
    grid = write_png(os.path.join(out, "grid.png"), image_grid(images, 8, scale=2))
    print(f"wrote {len(images)} samples of step {step} and {grid}")
