"""digits-FID: features and labels for generated 32x32 digits from a small jaxvision classifier.

A CPU-sized stand-in for Inception features, for GANs trained on the embedded handwritten
digits (upsampled to 32x32): `digits_features` gives the classifier's 64-d penultimate layer,
standardised by its mean and standard deviation over the train split (so that KID's cubic
kernel sees values of order one, as with Inception features), and `digits_classify` its logits
(the "conditional accuracy" of class-conditional samples). Numbers computed with these
features are called digits-FID / digits-KID: they compare runs on digits with each other and are
NOT comparable to Inception FIDs.

The weights ship with jaxvision (`digits_fid.safetensors` beside this file); they were trained
on the digits' train split only (`open_dataset("digits")`: test_fraction 0.2, split_seed 0),
upsampled to 32x32 by PIL bilinear, bicubic and nearest resizing with random shifts of up to 2
pixels, by the deterministic command

    python -m jaxvision.evaluation.train_digits_fid \
        --out=jaxvision/evaluation/digits_fid.safetensors

which also reports the test-split accuracy (see `TEST_ACCURACY`).

Images: [B, 32, 32, 1] uint8 in 0..255, or floating in [-1, 1] (a generator's tanh output);
white digits on black, as the embedded digits are. Both functions are jittable.
"""

import functools
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_fid.safetensors")
IMAGE_SHAPE = (32, 32, 1)
FEATURES = 64
# jaxvision.evaluation.train_digits_fid with the shipped weights: the digits' test split (360
# images, never trained on), PIL bilinear upsampling: 359 / 360 (bicubic: the same; nearest:
# 360 / 360).
TEST_ACCURACY = 359 / 360


class DigitsNet(nn.Module):
    """conv(32) → pool → conv(64) → pool → conv(32) → pool → dense(64) → ReLU → dense(10).

    x: [B, 32, 32, 1] float in [-1, 1] → logits [B, 10] float32, or with `features` the
    dense(64) output before its ReLU [B, 64] float32 (every unit varies, so the features'
    covariance has full rank). 70,762 parameters, `params` only.
    """

    num_classes: int = 10
    dropout_rate: float = 0.3

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, features: bool = False):
        for i, width in enumerate((32, 64, 32), 1):
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", name=f"conv{i}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # [B, 4 * 4 * 32]
        embedding = nn.Dense(FEATURES, name="fc1")(x)
        head = nn.Dense(self.num_classes, name="fc2")
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(embedding))
        logits = head(x)
        return embedding if features else logits


def upsample_digits(images: np.ndarray, method: str = "bilinear") -> np.ndarray:
    """The embedded 8x8 digits at 32x32: uint8 [N, 8, 8, 1] → uint8 [N, 32, 32, 1] by PIL's
    `method` ("bilinear", "bicubic" or "nearest"); host-side, numpy."""
    from PIL import Image

    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }
    if method not in resample:
        raise UserError(f"upsample_digits: unknown method {method!r}: use {', '.join(resample)}")
    images = np.asarray(images, np.uint8)
    out = [
        np.asarray(Image.fromarray(image[:, :, 0]).resize((32, 32), resample[method]))
        for image in images
    ]
    return np.stack(out)[:, :, :, None] if out else np.zeros((0, *IMAGE_SHAPE), np.uint8)


def to_unit_range(images) -> jnp.ndarray:
    """[B, 32, 32, 1] uint8 (0..255) or float ([-1, 1]) → float32 in [-1, 1]."""
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise UserError(
            f"digits-FID takes images [B, 32, 32, 1], got {tuple(images.shape)}: upsample the "
            "8x8 digits to 32x32 (one grey channel) as the GAN trains on them"
        )
    if jnp.issubdtype(images.dtype, jnp.integer):
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images.astype(jnp.float32)


@functools.cache
def _shipped_variables() -> dict:
    return load_variables(WEIGHTS)


def load_variables(path: str = WEIGHTS) -> dict:
    """{"params": DigitsNet's, "feature_stats": {"mean", "std"} [64]} from a safetensors file
    of flat "collection/module/leaf" names."""
    from flax import traverse_util

    from jaxvision.weights.common import load_safetensors

    tensors = load_safetensors(path)
    flat = {tuple(name.split("/")): np.asarray(v) for name, v in tensors.items()}
    return traverse_util.unflatten_dict(flat)


def save_variables(path: str, variables: dict) -> None:
    """Writes `load_variables`'s dict as safetensors with flat "collection/module/leaf" names."""
    from flax import traverse_util

    from jaxvision.weights.common import save_safetensors

    flat = traverse_util.flatten_dict(variables)
    save_safetensors(path, {"/".join(k): np.asarray(v, np.float32) for k, v in flat.items()})


def digits_features(images, variables: dict | None = None) -> jnp.ndarray:
    """images: [B, 32, 32, 1] uint8 or float in [-1, 1] → digits-FID features [B, 64] float32:
    DigitsNet's embedding standardised by the train split's "feature_stats".

    variables: `load_variables`'s (default: the weights shipped with jaxvision)."""
    variables = _shipped_variables() if variables is None else variables
    params = {"params": variables["params"]}
    embedding = DigitsNet().apply(params, to_unit_range(images), features=True)
    stats = variables["feature_stats"]
    return (embedding - stats["mean"]) / stats["std"]


def digits_classify(images, variables: dict | None = None) -> jnp.ndarray:
    """images: [B, 32, 32, 1] uint8 or float in [-1, 1] → class logits [B, 10] float32
    (argmax: the digit the classifier reads)."""
    variables = _shipped_variables() if variables is None else variables
    return DigitsNet().apply({"params": variables["params"]}, to_unit_range(images))
