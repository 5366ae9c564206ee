"""Pure train and eval steps for classification, and how they are jitted over a mesh.

Nothing here imports TensorFlow or the data code: benchmarks drive these steps with synthetic
batches on machines that have neither.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding

from jaxvision.sharding import replicated
from jaxvision.train.ema import ema_update
from jaxvision.train.metrics import confusion_counts
from jaxvision.train.mixing import mixup_cutmix
from jaxvision.train.optim import frozen_mask
from jaxvision.train.state import TrainState


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """images: [B, H, W, C] uint8 (0..255) -> float32, per channel (x - mean) / std.

    Done on the device so the host sends 1 byte per pixel instead of 4.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) - mean) / std


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


def _apply(model, params, batch_stats, images, *, train: bool, rng=None):
    """Runs the model; returns (logits, new batch_stats)."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    if train and batch_stats:
        logits, updates = model.apply(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        return logits, updates["batch_stats"]
    rngs = {"dropout": rng} if train else {}
    return model.apply(variables, images, train=train, rngs=rngs), batch_stats


def split_microbatches(batch: dict, num: int) -> dict:
    """[B, ...] leaves -> [num, B / num, ...]; micro-batch i takes rows i, i + num, i + 2 num...

    Strided rather than contiguous so that each device's share of a batch split over the mesh
    holds an equal part of every micro-batch: no data moves between devices.
    """

    def split(x):
        if x.shape[0] % num:
            raise ValueError(f"batch of {x.shape[0]} does not split into {num} micro-batches")
        return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    label_smoothing: float = 0.0,
    learning_rate: optax.Schedule | None = None,
    microbatches: int = 1,
    mixing: dict | None = None,
    class_weights: Sequence[float] | None = None,
    ema_decay: float = 0.0,
    ema_warmup: bool = True,
    frozen=None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns `train_step(state, batch) -> (state, metrics)`.

    batch: {"image": [B, H, W, C] uint8, "label": [B] int32}. Under jit over a mesh the batch is
    global, so BatchNorm statistics and the mean loss are over the whole global batch.
    microbatches: k > 1 accumulates the gradients of k micro-batches of B / k inside the step
    (one optimizer update, activation memory of B / k); BatchNorm then sees B / k at a time.
    mixing: keyword arguments of `mixup_cutmix` (mixup_alpha, cutmix_alpha, switch_prob, prob);
    None: off. Label smoothing applies before mixing; train/top1 counts the unmixed labels.
    class_weights: [K] loss weight per class (imbalanced data); None: all 1.
    ema_decay: with a state that has `ema_params`, their decay per step (warmup: timm's
    min(decay, (1 + step) / (10 + step))).
    frozen: the optimizer's `frozen` (a path predicate or a tree of bools). Frozen parameters
    enter the loss through `stop_gradient`, so the backward pass skips everything only they
    need (a linear probe differentiates the head alone); their gradients are zero.
    metrics: scalars `train/loss`, `train/top1`, `train/grad_norm` and (given `learning_rate`)
    `train/lr`.
    """

    weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

    def loss_and_grads(params, batch_stats, batch, rng):
        images = normalize(batch["image"], mean, std)
        targets = jax.nn.one_hot(batch["label"], model.num_classes)
        if label_smoothing:
            targets = optax.smooth_labels(targets, label_smoothing)
        if mixing:
            mix_rng, rng = jax.random.split(rng)
            images, targets, _ = mixup_cutmix(mix_rng, images, targets, **mixing)
        # Per-example weights from the (mixed) targets: sum(w_i l_i) / sum(w_i), as torch's
        # CrossEntropyLoss(weight=...) with mean reduction.
        example_weights = 1.0 if weights is None else targets @ weights

        def loss_fn(params):
            if frozen is not None:
                params = jax.tree.map(
                    lambda p, f: jax.lax.stop_gradient(p) if f else p,
                    params,
                    frozen_mask(frozen, params),
                )
            outputs, new_stats = _apply(model, params, batch_stats, images, train=True, rng=rng)
            # Models with auxiliary classifiers (GoogLeNet, Inception v3 with `aux_logits`)
            # return (logits, *aux_logits) in training; each aux loss adds with the model's
            # `aux_loss_weight` (0.3 in GoogLeNet's paper, 0.4 in Inception v3's).
            logits, *aux_logits = outputs if isinstance(outputs, tuple) else (outputs,)

            def weighted_loss(logits):
                losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
                return jnp.sum(losses * example_weights) / jnp.sum(
                    jnp.broadcast_to(example_weights, losses.shape)
                )

            loss = weighted_loss(logits)
            for aux in aux_logits:
                loss += model.aux_loss_weight * weighted_loss(aux)
            return loss, (topk_correct(logits, batch["label"], 1).mean(), new_stats)

        (loss, (top1, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, top1, new_stats, grads

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if microbatches == 1:
            loss, top1, batch_stats, grads = loss_and_grads(
                state.params, state.batch_stats, batch, rng
            )
        else:

            def accumulate(carry, micro):
                index, batch_stats, sums = carry
                micro_rng = jax.random.fold_in(rng, index)
                loss, top1, batch_stats, grads = loss_and_grads(
                    state.params, batch_stats, micro, micro_rng
                )
                sums = jax.tree.map(jnp.add, sums, (loss, top1, grads))
                return (index + 1, batch_stats, sums), None

            zeros = (jnp.float32(0), jnp.float32(0), jax.tree.map(jnp.zeros_like, state.params))
            carry = (jnp.int32(0), state.batch_stats, zeros)
            (_, batch_stats, sums), _ = jax.lax.scan(
                accumulate, carry, split_microbatches(batch, microbatches)
            )
            loss, top1, grads = jax.tree.map(lambda x: x / microbatches, sums)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_params is not None:
            ema_params = ema_update(ema_params, params, state.step, ema_decay, ema_warmup)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema_params=ema_params,
        )
        metrics = {
            "train/loss": loss,
            "train/top1": top1,
            "train/grad_norm": optax.tree.norm(grads),
        }
        if learning_rate is not None:
            metrics["train/lr"] = learning_rate(state.step)
        return new_state, metrics

    return train_step


def make_eval_step(
    model: nn.Module, *, mean: Sequence[float], std: Sequence[float], confusion: bool = False
) -> Callable[[TrainState, dict], dict]:
    """Returns `eval_step(state, batch) -> sums`.

    batch: {"image": [B, H, W, C] uint8, "label": [B] int32, "mask": [B] bool}; padded examples
    (mask False) count nowhere. Sums, not means, so batches of a pass add up exactly:
    {"count", "loss", "top1", "top5"}; `summarize_eval` turns them into `eval/*` metrics.
    With `confusion`, also "confusion": int32 [K, K] counts (rows true, columns predicted).
    """

    def eval_step(state: TrainState, batch: dict) -> dict:
        images = normalize(batch["image"], mean, std)
        labels = batch["label"]
        mask = batch["mask"].astype(jnp.float32)
        logits, _ = _apply(model, state.params, state.batch_stats, images, train=False)
        sums = {
            "count": mask.sum(),
            "loss": (cross_entropy(logits, labels) * mask).sum(),
            "top1": (topk_correct(logits, labels, 1) * mask).sum(),
            "top5": (topk_correct(logits, labels, 5) * mask).sum(),
        }
        if confusion:
            sums["confusion"] = confusion_counts(logits, labels, batch["mask"], model.num_classes)
        return sums

    return eval_step


def summarize_eval(sums: dict, prefix: str = "eval") -> dict:
    """Accumulated eval sums -> {"eval/loss", "eval/top1", "eval/top5"} as Python floats."""
    count = max(float(sums["count"]), 1.0)
    return {f"{prefix}/{k}": float(sums[k]) / count for k in ("loss", "top1", "top5")}


def jit_train_step(
    train_step, mesh: Mesh, state_sharding, batch_sharding: NamedSharding
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """jit with explicit shardings; the input state is donated (its buffers become the output's)."""
    return jax.jit(
        train_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=0,
    )


def jit_eval_step(eval_step, mesh: Mesh, state_sharding, batch_sharding: NamedSharding):
    return jax.jit(
        eval_step,
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=replicated(mesh),
    )
