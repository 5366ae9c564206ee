"""Models by name: `build("resnet50", num_classes=1000)`.

Adding a model is adding a file that defines a Flax module and one entry in `MODELS` (a
`declare` line here, or `@MODELS.register(name)` on the class). The
module has fields `num_classes` and `dtype`; a class attribute `classifier` naming its top-level
classifier module; `__call__(self, x, train=False, features=False)` returning float32 logits, or
with `features=True` a dict of "pre_logits" ([B, D] float32, what the classifier reads) and the
named intermediate maps; and a method `feature_names()` listing those maps' names, shallow to
deep, the last being the default layer for Grad-CAM (the last spatial map, or the last tokens).
Init with `features=True` creates the same parameters as without (the head runs, unused).
A registry entry is the module class, or a `functools.partial` of it that fixes some fields
(e.g. a depth); the fields it fixes cannot be passed to `build`.
"""

import operator
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.registry import ModelRegistry

# name -> a module class or a functools.partial of one, imported on first use, so a model's
# module loads only when that model is built. A model defined elsewhere (a research fork, a
# test) registers itself: `@models.MODELS.register("my_net")` on its module class.
MODELS = ModelRegistry("model")
for _name, _target in {
    "simple_cnn": "simple_cnn:SimpleCNN",
    "resnet18": "resnet:ResNet18",
    "resnet34": "resnet:ResNet34",
    "resnet50": "resnet:ResNet50",
    "resnet101": "resnet:ResNet101",
    "resnet152": "resnet:ResNet152",
    "vgg16": "vgg:VGG16",
    "vgg19": "vgg:VGG19",
    "vgg16_bn": "vgg:VGG16BN",
    "vgg19_bn": "vgg:VGG19BN",
    "googlenet": "googlenet:GoogLeNet",
    "inception_v3": "inception:InceptionV3",
    "densenet121": "densenet:DenseNet121",
    "densenet169": "densenet:DenseNet169",
    "vit_ti16": "vit:ViT_Ti16",
    "vit_s16": "vit:ViT_S16",
    "vit_s4": "vit:ViT_S4",
    "vit_b16": "vit:ViT_B16",
    "vit_b32": "vit:ViT_B32",
    "vit_l16": "vit:ViT_L16",
    "vit_h14": "vit:ViT_H14",
    "vit_g14": "vit:ViT_g14",
    "vit_bigg14": "vit:ViT_bigG14",
    "vit_b16_r50": "vit:ViT_B16_R50",
    "mixer_b16": "mixer:MixerB16",
    "row_rnn": "rnn:RowRNN",
}.items():
    MODELS.declare(_name, f"jaxvision.models.{_target}")


def names() -> list[str]:
    """All model names, sorted (numbers in names compare as numbers)."""
    return MODELS.names()


def options(name: str) -> list[str]:
    """Keyword options `build(name, ...)` accepts besides `num_classes` and `dtype`, sorted."""
    return MODELS.options(name)


def classifier(name: str) -> str:
    """The name of the model's top-level classifier module, e.g. "fc" (ResNet), "head" (ViT),
    "classifier_6" (VGG): what a linear probe trains and what a new head replaces."""
    return MODELS.module_class(name).classifier


def feature_names(name: str, **options: Any) -> tuple[str, ...]:
    """The intermediate maps `features=True` returns besides "pre_logits", shallow to deep, for
    the model `name` built with `options` (depth options change them): e.g. ("C2", "C3", "C4",
    "C5") for resnet50. The last is the default layer for Grad-CAM."""
    return build(name, num_classes=1, **options).feature_names()


def build(name: str, *, num_classes: int, dtype: Any = jnp.float32, **kwargs: Any) -> nn.Module:
    """Returns the model `name` (unbound) with compute `dtype`; parameters are float32.

    Calling convention: `model.apply(variables, images, train, mutable=[...])` with
    images: [B, H, W, C] float (normalised) returns logits: [B, num_classes] float32.
    Raises UserError for an unknown name, a bad `num_classes` or an option the model lacks.
    """
    MODELS.module_class(name)  # an unknown name fails first
    # operator.index also accepts numpy integers (a class count read from a dataset).
    if not hasattr(num_classes, "__index__") or operator.index(num_classes) < 1:
        raise UserError(f"model {name!r}: num_classes must be a positive int, got {num_classes!r}")
    return MODELS.create(name, num_classes=operator.index(num_classes), dtype=dtype, **kwargs)
