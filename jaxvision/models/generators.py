"""Image generators and their discriminators by name: `build("dcgan", image_size=32, ...)`.

A GAN family registers both halves under one name: `GENERATORS` (z: [B, latent_dim] float
(+ labels [B] int when conditional) -> [B, S, S, C] float32 in [-1, 1]) and `DISCRIMINATORS`
(images [B, S, S, C] in [-1, 1] (+ labels) -> logits [B] float32). Their fields are the
options; a workdir's model.json keeps the generator's ("generator") beside its name ("model").
"""

from typing import Any

import flax.linen as nn

from jaxvision.registry import ModelRegistry

GENERATORS = ModelRegistry("generator", reserved=())
GENERATORS.declare("dcgan", "jaxvision.models.dcgan:Generator")
DISCRIMINATORS = ModelRegistry("discriminator", reserved=())
DISCRIMINATORS.declare("dcgan", "jaxvision.models.dcgan:Discriminator")


def names() -> list[str]:
    """The GAN families, sorted."""
    return GENERATORS.names()


def build(name: str, **options: Any) -> nn.Module:
    """The generator of family `name` with `options` (its fields: image_size, channels,
    latent_dim, width, num_classes, dtype for "dcgan"); UserError for an unknown name or
    option."""
    return GENERATORS.create(name, **options)


def discriminator(name: str, **options: Any) -> nn.Module:
    """The discriminator of family `name` with `options` (image_size, width, num_classes, dtype
    for "dcgan")."""
    return DISCRIMINATORS.create(name, **options)
