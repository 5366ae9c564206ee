"""Contrastive image-text losses over the device mesh: SigLIP's sigmoid loss and CLIP's softmax
loss, equal (up to float rounding) to their one-device values and gradients.

Both take L2-normalised embeddings image: [B, E] and text: [B, E] (row i of each is one pair;
B the global batch, split over the mesh's batch axes like every batch) and `t`, the log of the
logit scale (the model's parameter: logits = exp(t) * <image, text> (+ b)).

- `sigmoid_loss` (Zhai et al. 2023): every (image, text) pair is a binary problem, positive on
  the diagonal. With a mesh it is computed as the paper's chunked version (its Algorithm 1;
  big_vision's single-device trainer computes the same sum on one block): inside `shard_map`
  each device scores its local images against its local texts, then passes its text chunk to
  the next device on the batch axes (`ppermute`) and scores the chunk it receives, until every
  chunk has visited every device. Memory holds one [b, b] block of logits (b = the local
  batch), never [b, B]; the positives are the diagonal of the device's own block. Each step is
  rematerialised, so the backward pass keeps only the text chunks.
- `softmax_loss` (CLIP): symmetric cross-entropy, image→text and text→image, over the whole
  batch. With a mesh, each device all-gathers the other side's embeddings (its gradient flows
  back through the gather, as open_clip's `gather_with_grad`) and scores its local rows
  against all B columns: [b, B] logits per device.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxvision.sharding import batch_axes


def _scalar(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32).reshape(())


def _sigmoid_block(image, text, scale, bias, positives: bool) -> jax.Array:
    """-sum log sigmoid(z * logits) over one block, z = +1 on the diagonal when `positives`."""
    logits = scale * (image @ text.T) + bias
    if positives:
        logits = logits * (2.0 * jnp.eye(logits.shape[0], logits.shape[1]) - 1.0)
    else:
        logits = -logits
    return -jnp.sum(jax.nn.log_sigmoid(logits))


def _sigmoid_sharded(image, text, t, b, *, axes: tuple[str, ...], size: int):
    scale = jnp.exp(t)
    total = _sigmoid_block(image, text, scale, b, positives=True)
    ring = [(i, (i + 1) % size) for i in range(size)]

    @jax.checkpoint
    def step(carry, _):
        chunk, total = carry
        chunk = jax.lax.ppermute(chunk, axes, ring)
        return (chunk, total + _sigmoid_block(image, chunk, scale, b, positives=False)), None

    (_, total), _ = jax.lax.scan(step, (text, total), None, length=size - 1)
    return jax.lax.psum(total, axes) / (image.shape[0] * size)


def _softmax_sharded(image, text, t, *, axes: tuple[str, ...], size: int):
    scale = jnp.exp(t)
    local = image.shape[0]
    all_images = jax.lax.all_gather(image, axes, tiled=True)
    all_texts = jax.lax.all_gather(text, axes, tiled=True)
    labels = jax.lax.axis_index(axes) * local + jnp.arange(local)
    total = 0.0
    for rows, columns in ((image, all_texts), (text, all_images)):
        logits = scale * (rows @ columns.T)  # [b, B]
        picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
        total = total + jnp.sum(jax.nn.logsumexp(logits, axis=1) - picked)
    return jax.lax.psum(total, axes) / (2 * local * size)


def _split(mesh: Mesh | None, axes) -> tuple[tuple[str, ...], int]:
    if mesh is None:
        return (), 1
    axes = tuple(batch_axes(mesh) if axes is None else axes)
    size = 1
    for axis in axes:
        size *= mesh.shape[axis]
    return axes, size


def _check(image, text, axes: tuple[str, ...], size: int) -> None:
    if image.ndim != 2 or image.shape != text.shape:
        raise ValueError(
            f"contrastive loss wants image and text embeddings of one shape [B, E], got "
            f"{image.shape} and {text.shape}"
        )
    if image.shape[0] % size:
        raise ValueError(
            f"contrastive loss: a batch of {image.shape[0]} does not split over the {size} "
            f"devices of the mesh axes {'x'.join(axes)}"
        )


def sigmoid_loss(image, text, t, b, *, mesh: Mesh | None = None, axes=None) -> jax.Array:
    """SigLIP's loss: -1/B sum_ij log sigmoid(z_ij (exp(t) <image_i, text_j> + b)), z_ij = 1
    for i = j and -1 otherwise (big_vision's normalisation: summed over texts, averaged over
    images). image, text: [B, E] float32 (unit norm); t, b: scalars (or [1]) → float32 scalar.

    `mesh`: compute it chunk by chunk over the mesh's batch axes (or `axes`), as the module
    docstring says; B must divide evenly over them. Without a mesh: one block on one device.
    """
    axes, size = _split(mesh, axes)
    _check(image, text, axes, size)
    t, b = _scalar(t), _scalar(b)
    if size == 1:
        return _sigmoid_block(image, text, jnp.exp(t), b, positives=True) / image.shape[0]
    loss = jax.shard_map(
        functools.partial(_sigmoid_sharded, axes=axes, size=size),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P(), P()),
        out_specs=P(),
    )
    return loss(image, text, t, b)


def softmax_loss(image, text, t, *, mesh: Mesh | None = None, axes=None) -> jax.Array:
    """CLIP's loss: the mean of the image→text and text→image cross-entropies of the logits
    exp(t) * image @ text.T [B, B] against the diagonal. image, text: [B, E] float32 (unit norm);
    t: scalar (or [1]) → float32 scalar.

    `mesh`: each device gathers the embeddings over the mesh's batch axes (or `axes`) and
    scores its own rows, as the module docstring says. Without a mesh: on one device.
    """
    axes, size = _split(mesh, axes)
    _check(image, text, axes, size)
    t = _scalar(t)
    if size == 1:
        logits = jnp.exp(t) * (image @ text.T)
        diagonal = jnp.diagonal(logits)
        image_to_text = jax.nn.logsumexp(logits, axis=1) - diagonal
        text_to_image = jax.nn.logsumexp(logits, axis=0) - diagonal
        return (jnp.mean(image_to_text) + jnp.mean(text_to_image)) / 2
    loss = jax.shard_map(
        functools.partial(_softmax_sharded, axes=axes, size=size),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P()),
        out_specs=P(),
    )
    return loss(image, text, t)
