"""Optimizers and learning-rate schedules, built from plain arguments.

Besides the optimizer itself `make_optimizer` takes the fine-tuning knobs: per-parameter learning
rate multipliers (`layer_decay_multipliers` for ViTs) and frozen parameters (`frozen_except` for a
linear probe).
"""

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxvision.errors import UserError

OPTIMIZERS = ("sgd", "adamw", "lamb", "lars")
SCHEDULES = ("cosine", "constant", "linear", "step")
WEIGHT_DECAY_MODES = ("decoupled", "l2")


def make_schedule(
    name: str,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    boundaries: Sequence[float] = (0.3, 0.6, 0.9),
    decay_factor: float = 0.1,
    end_factor: float = 0.0,
) -> optax.Schedule:
    """Linear warmup from 0 to `base_lr` over `warmup_steps`, then `name` until `total_steps`.

    cosine: half a cosine down to `end_factor` x `base_lr` at `total_steps`. constant: `base_lr`.
    linear: a straight line down to `end_factor` x `base_lr` at `total_steps` (YOLO's lrf).
    step: `base_lr` times `decay_factor` for each of `boundaries` (fractions of `total_steps`)
    already passed, e.g. 0.1x from 30%, 0.01x from 60%.
    """
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    warmup = optax.linear_schedule(0.0, base_lr, max(warmup_steps, 1))
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=base_lr,
            warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1),
            end_value=base_lr * end_factor,
        )
    if name == "constant":
        return optax.join_schedules([warmup, optax.constant_schedule(base_lr)], [warmup_steps])
    if name == "linear":
        end = base_lr * end_factor
        decay = optax.linear_schedule(base_lr, end, max(total_steps - warmup_steps, 1))
        return optax.join_schedules([warmup, decay], [warmup_steps])
    if name == "step":
        if any(not 0.0 < b < 1.0 for b in boundaries):
            raise UserError(f"step schedule boundaries {tuple(boundaries)} must lie in (0, 1)")
        steps = jnp.asarray([round(b * total_steps) for b in boundaries], jnp.int32)

        def step_schedule(step):
            passed = jnp.sum(step >= steps)
            rate = base_lr * jnp.asarray(decay_factor, jnp.float32) ** passed
            return jnp.where(step < warmup_steps, warmup(step), rate)

        return step_schedule
    raise UserError(f"unknown schedule '{name}': choose one of {', '.join(SCHEDULES)}")


def param_path(path: tuple) -> str:
    """A key path from `jax.tree_util.tree_map_with_path` -> "blocks_0/attn/query/kernel"."""
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
        else:
            names.append(str(key))
    return "/".join(names)


def decay_mask(params):
    """True for the weights that get weight decay: kernels and embeddings, not norms or biases.

    Norm scales and biases are the 1-D leaves or are named `scale` / `bias` (a ViT's query bias
    is [heads, head_dim]); every matrix or conv kernel has ndim >= 2.
    """

    def decays(path, x):
        return x.ndim > 1 and param_path(path).rsplit("/", 1)[-1] not in ("bias", "scale")

    return jax.tree_util.tree_map_with_path(decays, params)


def layer_decay_multipliers(params, decay: float, num_layers: int):
    """Learning-rate multipliers for layer-wise decay in ViT fine-tuning (BEiT, MAE, timm's
    `layer_decay`): a leaf of layer `i` gets `decay ** (num_layers + 1 - i)`.

    Layer 0 is the embedding (`patch_embed/...`, `cls_token`, `pos_embed`), layer i + 1 is
    `blocks_{i}`, and everything else (the final `norm`, `head`) is layer num_layers + 1, which
    keeps the full rate. params: a ViT's parameter tree; returns the same tree of Python floats.
    """

    def layer_id(name: str) -> int:
        top = name.split("/", 1)[0]
        if top in ("patch_embed", "cls_token", "pos_embed"):
            return 0
        match = re.fullmatch(r"blocks_(\d+)", top)
        if match:
            block = int(match.group(1))
            if block >= num_layers:
                raise UserError(f"parameter {name} is past num_layers={num_layers}")
            return block + 1
        return num_layers + 1

    names = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    if not any(re.match(r"blocks_\d+/", n) for n in names):
        raise UserError("layer decay needs a ViT parameter tree (no blocks_{i}/... parameters)")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: float(decay ** (num_layers + 1 - layer_id(param_path(path)))), params
    )


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
    """Multiplies each update by its leaf of `multipliers` (a tree of floats like the params, or a
    function params -> such a tree). Placed last in a chain it scales that leaf's learning rate,
    decoupled weight decay included, as a per-group `lr` in torch."""

    def update_fn(updates, state, params=None):
        scales = (
            multipliers(params if params is not None else updates)
            if callable(multipliers)
            else multipliers
        )
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, scales), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def frozen_except(*trainable: str) -> Callable[[str], bool]:
    """A `frozen` predicate for `make_optimizer` that freezes every parameter whose top-level
    module is not one of `trainable`: `frozen_except(models.classifier(name))` is a linear probe."""
    return lambda path: path.split("/", 1)[0] not in trainable


def frozen_mask(frozen, params) -> Any:
    """`params`' structure with True at the frozen leaves. frozen: a predicate on parameter
    paths (as `frozen_except` returns) or already a tree of bools."""
    if not callable(frozen):
        return frozen
    return jax.tree_util.tree_map_with_path(lambda path, _: bool(frozen(param_path(path))), params)


def _frozen_labels(frozen) -> Callable[[Any], Any]:
    def labels(params):
        return jax.tree.map(lambda f: "frozen" if f else "trainable", frozen_mask(frozen, params))

    return labels


def _bias_labels(params):
    """ "bias" for every bias (norms' included), "other" for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "bias" if param_path(path).endswith("bias") else "other", params
    )


def _scale_by_lr(schedule, warmup_steps: int, warmup_bias_lr: float):
    """-schedule(step) x update; with warmup_bias_lr, the biases' rate in the warmup is the line
    from warmup_bias_lr at step 0 to the schedule's value at `warmup_steps` (the schedule's own
    warmup rises from 0 along the same steps)."""
    if not warmup_bias_lr:
        return optax.scale_by_learning_rate(schedule)

    def bias_schedule(step):
        left = jnp.clip(1.0 - step / max(warmup_steps, 1), 0.0, 1.0)
        return schedule(step) + warmup_bias_lr * left

    scale = {
        "bias": optax.scale_by_learning_rate(bias_schedule),
        "other": optax.scale_by_learning_rate(schedule),
    }
    return optax.multi_transform(scale, _bias_labels)


def _momentum(momentum, nesterov, moment_dtype, warmup_steps: int, warmup_momentum):
    """SGD's momentum (torch's: buf = m buf + g; Nesterov g + m buf), m rising linearly from
    warmup_momentum to `momentum` over `warmup_steps` when warmup_momentum is not None."""
    if warmup_momentum is None:
        return optax.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=moment_dtype)

    def decay(step):
        done = jnp.clip(step / max(warmup_steps, 1), 0.0, 1.0)
        return warmup_momentum + (momentum - warmup_momentum) * done

    trace = optax.inject_hyperparams(optax.trace, static_args=("nesterov", "accumulator_dtype"))
    return trace(decay=decay, nesterov=nesterov, accumulator_dtype=moment_dtype)


def make_optimizer(
    name: str,
    learning_rate: optax.Schedule,
    *,
    weight_decay: float = 0.0,
    weight_decay_mode: str = "decoupled",
    momentum: float = 0.9,
    nesterov: bool = True,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    trust_coefficient: float = 0.001,
    grad_clip_norm: float | None = None,
    moment_dtype=None,
    lr_multipliers=None,
    frozen=None,
    warmup_steps: int = 0,
    warmup_bias_lr: float = 0.0,
    warmup_momentum: float | None = None,
) -> optax.GradientTransformation:
    """SGD (+ Nesterov momentum, L2 weight decay added to the gradient as in the ResNet papers),
    AdamW, LAMB (Adam with a per-leaf trust ratio ‖w‖ / ‖update‖) or LARS (momentum SGD with a
    per-leaf trust ratio `trust_coefficient` ‖w‖ / ‖g + wd w‖). Weight decay and the trust
    ratios skip norms and biases (`decay_mask`).

    weight_decay_mode (adamw, lamb): "decoupled" decays the weights beside the adaptive step
    (Loshchilov & Hutter); "l2" adds wd * w to the gradient before it. SGD and LARS always add it
    to the gradient, as their papers.
    moment_dtype: dtype of the momentum / first moment (e.g. jnp.bfloat16 to halve its memory);
    None keeps the parameters' float32. Adam's second moment always stays float32.
    lr_multipliers: a tree of floats like the params (or params -> tree), e.g.
    `layer_decay_multipliers`; each leaf's whole update is scaled by its multiplier.
    frozen: a predicate on parameter paths ("blocks_0/mlp/fc1/kernel" -> bool) or a tree of
    bools; frozen leaves get zero updates and no optimizer state (`frozen_except("head")`).
    Gradient clipping then uses the trainable leaves' norm only.
    warmup_bias_lr, warmup_momentum (sgd, and warmup_bias_lr for adamw; the YOLO reference's
    warmup): over the first `warmup_steps`, the biases' learning rate falls linearly from
    warmup_bias_lr to the schedule's while the other parameters' rises from 0, and the momentum
    rises linearly from warmup_momentum to `momentum`. 0 / None: off.
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise UserError(
            f"unknown weight_decay_mode '{weight_decay_mode}': "
            f"choose one of {', '.join(WEIGHT_DECAY_MODES)}"
        )
    l2 = weight_decay_mode == "l2"
    parts = []
    if grad_clip_norm:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    if (warmup_bias_lr and name not in ("sgd", "adamw")) or (
        warmup_momentum is not None and name != "sgd"
    ):
        raise UserError(
            f"warmup_bias_lr / warmup_momentum are for optimizer 'sgd' (warmup_bias_lr also "
            f"'adamw'), not '{name}': set them to 0 / None"
        )
    if name == "sgd":
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        if warmup_bias_lr or warmup_momentum is not None:
            parts += [
                _momentum(momentum, nesterov, moment_dtype, warmup_steps, warmup_momentum),
                _scale_by_lr(learning_rate, warmup_steps, warmup_bias_lr),
            ]
        else:
            parts.append(
                optax.sgd(
                    learning_rate,
                    momentum=momentum or None,
                    nesterov=nesterov,
                    accumulator_dtype=moment_dtype,
                )
            )
    elif name == "adamw" and not l2 and warmup_bias_lr:
        # optax.adamw's chain, with the biases' own learning rate in the warmup.
        parts += [
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=moment_dtype),
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            _scale_by_lr(learning_rate, warmup_steps, warmup_bias_lr),
        ]
    elif name == "adamw" and not l2:
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
    elif name == "adamw":
        parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
        parts.append(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, mu_dtype=moment_dtype))
    elif name == "lamb":
        # optax.lamb's chain, with the trust ratio masked like the decay (BERT's LAMB leaves
        # LayerNorm and biases out of the layer adaptation) and the choice of where decay goes.
        decay = optax.add_decayed_weights(weight_decay, mask=decay_mask)
        parts += [
            *([decay] if l2 else []),
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps, mu_dtype=moment_dtype),
            *([] if l2 else [decay]),
            optax.masked(optax.scale_by_trust_ratio(), decay_mask),
            optax.scale_by_learning_rate(learning_rate),
        ]
    elif name == "lars":
        # optax.lars's chain, plus the momentum's dtype.
        parts += [
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            optax.masked(
                optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient), decay_mask
            ),
            optax.scale_by_learning_rate(learning_rate),
            optax.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=moment_dtype),
        ]
    else:
        raise UserError(f"unknown optimizer '{name}': choose one of {', '.join(OPTIMIZERS)}")
    tx = optax.chain(*parts)
    if frozen is not None:
        # Partitioning (rather than zeroing a full update) keeps no moments for frozen leaves.
        tx = optax.multi_transform(
            {"trainable": tx, "frozen": optax.set_to_zero()}, _frozen_labels(frozen)
        )
    if lr_multipliers is not None:
        # Outside the partition: the multipliers are a tree of the full params.
        tx = optax.chain(tx, scale_by_multipliers(lr_multipliers))
    return tx
