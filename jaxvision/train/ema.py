"""Exponential moving average (EMA) of the weights, as timm's `ModelEmaV2` and big_vision.

How a run uses it: the train state carries `ema_params` (start them with `ema_init(params)`);
after each optimizer update the train step sets

    ema_params = ema_update(state.ema_params, new_params, state.step, decay, warmup)

with `state.step` the number of updates before this one. Evaluation runs twice, on `params`
and on `ema_params` (e.g. `state.replace(params=state.ema_params)`), reported as `eval/*` and
`eval_ema/*`. The functions take any tree of arrays, so BatchNorm statistics can be averaged
alongside (timm averages every buffer of the model).
"""

import jax
import jax.numpy as jnp


def ema_init(params):
    """A copy of `params` to start the average from.

    A copy, not the same arrays: the train state is donated to the jitted step, and one buffer
    cannot be donated twice.
    """
    return jax.tree.map(jnp.copy, params)


def ema_decay(step, decay: float, warmup: bool, ramp: float = 0.0) -> jax.Array:
    """The decay used at update `step` (0-based): `decay`; with warmup (timm's)
    min(decay, (1 + step) / (10 + step)), so early averages forget the random initialisation
    quickly (0.1 at step 0, 0.5 at step 8, 0.9 at step 80, 0.99 at step 890); with ramp > 0
    instead (the YOLO reference's, ramp 2,000) decay * (1 - exp(-(step + 1) / ramp)): 0.39 x decay
    after `ramp` updates, 0.95 x decay after 3 x `ramp`."""
    decay = jnp.asarray(decay, jnp.float32)
    step = jnp.asarray(step, jnp.float32)
    if ramp > 0:
        return decay * -jnp.expm1(-(step + 1.0) / ramp)
    if not warmup:
        return decay
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params, params, step, decay: float, warmup: bool = False, ramp: float = 0.0):
    """ema <- d * ema + (1 - d) * params for every leaf, d = `ema_decay(step, decay, warmup,
    ramp)`.

    ema_params, params: trees of the same structure; `step` may be traced (jit-safe). Each leaf
    keeps the dtype of `ema_params`; the average is computed in float32.
    """
    d = ema_decay(step, decay, warmup, ramp)

    def average(ema, new):
        mixed = d * ema.astype(jnp.float32) + (1.0 - d) * new.astype(jnp.float32)
        return mixed.astype(ema.dtype)

    return jax.tree.map(average, ema_params, params)
