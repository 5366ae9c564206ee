"""Losses and per-example scores shared by the tasks: cross-entropy, top-k, distillation."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """logits: [B, K] float, labels: [B] int -> [B] per-example loss (label smoothing as in
    Inception-v3: the target puts 1 - a on the label and a / K on every class)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """[B] float32, 1.0 where `labels` is among the `k` largest logits."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def distillation_kl(
    student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """[B] KL(teacher || student) of the temperature-softened distributions, times T^2 (Hinton
    et al. 2015: the gradients keep their scale as T changes).

    student_logits, teacher_logits: [B, K] float.
    """
    t = jnp.float32(temperature)
    teacher_log = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t)
    student_log = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
    return jnp.sum(jnp.exp(teacher_log) * (teacher_log - student_log), axis=-1) * t * t
