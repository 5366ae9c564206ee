"""Shallow, narrow stand-ins for a recipe's model, for smoke tests of the recipe's program.

A recipe's smoke test checks its program (data, augmentation, optimizer, EMA, evaluation,
plots), not its network's size: `tiny_model(config)` swaps config.model for the same module
class with one block per stage (ResNets) or two blocks (ViTs), narrow, registered for the
duration as `tiny_<name>`. The recipe's own model options (stem, pooling, position embedding,
stochastic depth...) still apply. A ResNet-50's or ViT-S's many layers cost most of the smoke
run's compile time."""

import contextlib
import functools

from jaxvision import models
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
    name = f"tiny_{config.model}"
    models.MODELS.register(name, TINY[config.model])
    config.model = name
    try:
        yield config
    finally:
        models.MODELS.unregister(name)
