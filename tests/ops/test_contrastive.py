"""SigLIP's sigmoid loss and CLIP's softmax loss (jaxvision.ops.contrastive): hand-computed
values on one device, and on 8 simulated devices the same loss and gradients as one device."""

import json
import math
import os
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops.contrastive import sigmoid_loss, softmax_loss
from tests.experiments.helpers import devices

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

# Two pairs; cosine similarities image_i . text_j = [[1, 0.6], [0, 0.8]].
IMAGE = jnp.array([[1.0, 0.0], [0.0, 1.0]])
TEXT = jnp.array([[1.0, 0.0], [0.6, 0.8]])


def softplus(x):  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def test_sigmoid_loss_by_hand():
    # -log sigmoid(z * logit) = softplus(-z * logit); z = +1 on the diagonal, -1 off it; summed
    # over texts, averaged over the 2 images.
    by_hand = (softplus(-1.0) + softplus(0.6) + softplus(0.0) + softplus(-0.8)) / 2
    np.testing.assert_allclose(sigmoid_loss(IMAGE, TEXT, 0.0, 0.0), by_hand, rtol=1e-6)
    # At SigLIP's initialisation (scale 10, bias -10): logits 10 * sim - 10.
    logits = 10 * np.array([[1.0, 0.6], [0.0, 0.8]]) - 10
    signs = np.array([[1, -1], [-1, 1]])
    by_hand = sum(softplus(-s * x) for s, x in zip(signs.flat, logits.flat, strict=True)) / 2
    loss = sigmoid_loss(IMAGE, TEXT, jnp.log(10.0), jnp.array([-10.0]))
    np.testing.assert_allclose(loss, by_hand, rtol=1e-6)


def test_softmax_loss_by_hand():
    e = math.exp
    image_to_text = [math.log(e(1) + e(0.6)) - 1, math.log(e(0) + e(0.8)) - 0.8]
    text_to_image = [math.log(e(1) + e(0)) - 1, math.log(e(0.6) + e(0.8)) - 0.8]
    by_hand = (sum(image_to_text) / 2 + sum(text_to_image) / 2) / 2
    np.testing.assert_allclose(softmax_loss(IMAGE, TEXT, 0.0), by_hand, rtol=1e-6)
    # The scale multiplies the similarities: at exp(t) = 2 the logits double.
    doubled = (math.log(e(2) + e(1.2)) - 2 + math.log(1 + e(1.6)) - 1.6) / 2
    doubled = (doubled + (math.log(e(2) + 1) - 2 + math.log(e(1.2) + e(1.6)) - 1.6) / 2) / 2
    np.testing.assert_allclose(softmax_loss(IMAGE, TEXT, math.log(2.0)), doubled, rtol=1e-6)


def test_mismatched_embeddings_are_refused():
    with pytest.raises(ValueError, match=r"one shape \[B, E\], got \(2, 2\) and \(3, 2\)"):
        sigmoid_loss(IMAGE, jnp.zeros((3, 2)), 0.0, 0.0)
    mesh = types.SimpleNamespace(shape={"data": 4, "model": 2}, axis_names=("data", "model"))
    with pytest.raises(ValueError, match=r"a batch of 2 does not split over the 4 devices of"):
        softmax_loss(IMAGE, TEXT, 0.0, mesh=mesh)


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ, **devices(8))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "contrastive_run.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # one process that compiles both losses on 4 layouts (~15 s)
@pytest.mark.parametrize("mesh", ["data8", "data2xfsdp4", "data4xmodel2"])
@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_eight_devices_equal_one(eight_devices, mesh, loss):
    single, sharded = eight_devices["single"][loss], eight_devices[mesh][loss]
    names = ["loss", "d/d image", "d/d text", "d/d t", "d/d b"]
    assert single[0] > 0.01 and np.abs(single[1]).max() > 1e-3  # a loss that teaches something
    for name, mine, reference in zip(names, sharded, single, strict=False):
        # float32 sums in another order: a few ulps of the largest term.
        np.testing.assert_allclose(mine, reference, rtol=2e-5, atol=2e-6, err_msg=name)
