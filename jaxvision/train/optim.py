"""Optimizers and learning-rate schedules, built from plain arguments."""

import jax
import optax

from jaxvision.errors import UserError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def make_schedule(
    name: str, *, base_lr: float, total_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """Linear warmup from 0 to `base_lr` over `warmup_steps`, then `name` until `total_steps`."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=base_lr,
            warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1),
            end_value=0.0,
        )
    if name == "constant":
        warmup = optax.linear_schedule(0.0, base_lr, max(warmup_steps, 1))
        return optax.join_schedules([warmup, optax.constant_schedule(base_lr)], [warmup_steps])
    raise UserError(f"unknown schedule '{name}': choose one of {', '.join(SCHEDULES)}")


def decay_mask(params):
    """True for the weights that get weight decay: kernels and embeddings, not norms or biases.

    Norm scales and biases are the 1-D leaves; every matrix or conv kernel has ndim >= 2.
    """
    return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(
    name: str,
    learning_rate: optax.Schedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    grad_clip_norm: float | None = None,
    moment_dtype=None,
) -> optax.GradientTransformation:
    """SGD (+ Nesterov momentum, L2 weight decay added to the gradient as in the ResNet papers)
    or AdamW (decoupled weight decay). Decay skips norms and biases in both.

    moment_dtype: dtype of the momentum / first moment (e.g. jnp.bfloat16 to halve its memory);
    None keeps the parameters' float32. Adam's second moment always stays float32.
    """
    parts = []
    if grad_clip_norm:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    if name == "sgd":
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        parts.append(
            optax.sgd(
                learning_rate,
                momentum=momentum or None,
                nesterov=nesterov,
                accumulator_dtype=moment_dtype,
            )
        )
    elif name == "adamw":
        parts.append(
            optax.adamw(
                learning_rate,
                b1=b1,
                b2=b2,
                eps=eps,
                mu_dtype=moment_dtype,
                weight_decay=weight_decay,
                mask=decay_mask,
            )
        )
    else:
        raise UserError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")
    return optax.chain(*parts)
