"""Shallow, narrow stand-ins for a recipe's model, for smoke tests of the recipe's program.

A recipe's smoke test checks its program (data, augmentation, optimizer, EMA, evaluation,
plots, weight import), not its network's size: `tiny_model(config)` swaps config.model for the
same module class with one block per stage (ResNets) or two blocks (ViTs), narrow, registered
for the duration as `<name>_tiny` with the original's weight converter (the same torch names, so
a weight file of the tiny variant imports as the full model's would). The recipe's own model
options (stem, pooling, position embedding, stochastic depth...) still apply. A ResNet-50's or
ViT-S's many layers cost most of the smoke run's compile time."""

import contextlib
import functools

from jaxvision import models, weights
from jaxvision.models.resnet import BasicBlock, Bottleneck, ResNet
from jaxvision.models.vit import ViT

_RESNET = dict(stage_sizes=(1, 1, 1, 1), width=8)
_VIT = dict(width=48, depth=2, mlp_dim=96, num_heads=6)
TINY = {
    "resnet18": functools.partial(ResNet, block_cls=BasicBlock, **_RESNET),
    "resnet50": functools.partial(ResNet, block_cls=Bottleneck, **_RESNET),
    "vit_s16": functools.partial(ViT, patch_size=16, **_VIT),
    "vit_s4": functools.partial(ViT, patch_size=4, **_VIT),
}


@contextlib.contextmanager
def tiny_model(config):
    """Within the block, `config` trains the tiny variant of its model (see the docstring)."""
    original, name = config.model, f"{config.model}_tiny"
    models.MODELS.register(name, TINY[original])
    # The converters know a model's family by its name's start ("resnet..."), kept here.
    weights.CONVERTERS.register(name, weights.CONVERTERS[original])
    config.model = name
    try:
        yield config
    finally:
        models.MODELS.unregister(name)
        weights.CONVERTERS.unregister(name)
