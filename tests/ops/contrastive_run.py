"""Computes SigLIP's and CLIP's contrastive losses and their gradients (w.r.t. the image and
text embeddings, t and b) on one device and over meshes of 8 devices; prints them as JSON.

Run by test_contrastive.py in its own process with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.ops.contrastive import sigmoid_loss, softmax_loss
from jaxvision.sharding import batch_axes, make_mesh

MESHES = {
    "single": None,
    "data8": [("data", -1)],
    "data2xfsdp4": [("data", 2), ("fsdp", -1)],
    "data4xmodel2": [("data", 4), ("model", -1)],
}
BATCH, DIM = 32, 16


def embeddings():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(2, BATCH, DIM)).astype(np.float32)
    # Related pairs, so the diagonal differs from the rest, normalised as the models give them.
    text = text * 0.5 + image
    norm = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    return norm(image), norm(text)


def run(axes):
    image, text = embeddings()
    t, b = jnp.float32(np.log(10.0)), jnp.float32(-3.0)
    mesh = None if axes is None else make_mesh(axes)
    if mesh is not None:
        split = NamedSharding(mesh, P(batch_axes(mesh)))
        image, text = jax.device_put(image, split), jax.device_put(text, split)

    def sigmoid(image, text, t, b):
        return sigmoid_loss(image, text, t, b, mesh=mesh)

    def softmax(image, text, t):
        return softmax_loss(image, text, t, mesh=mesh)

    out = {}
    loss, grads = jax.jit(jax.value_and_grad(sigmoid, argnums=(0, 1, 2, 3)))(image, text, t, b)
    out["sigmoid"] = [float(loss), *(np.asarray(g).tolist() for g in grads)]
    loss, grads = jax.jit(jax.value_and_grad(softmax, argnums=(0, 1, 2)))(image, text, t)
    out["softmax"] = [float(loss), *(np.asarray(g).tolist() for g in grads)]
    return out


if __name__ == "__main__":
    assert jax.device_count() == 8, jax.devices()
    print(json.dumps({name: run(axes) for name, axes in MESHES.items()}))
