"""Value checks for the config fields every training program shares (experiments/configs/common.py).

A value out of range ends the run before anything is built or written, with one line that
names the field, its value and what it must be, instead of a traceback from deep inside the
step or, worse, a run that trains on nonsense.
"""

import math
from collections.abc import Callable

from jaxvision.errors import UserError


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(low) -> tuple[Callable, str]:
    return (lambda v: _number(v) and v >= low), f"a number >= {low}"


def _above(low) -> tuple[Callable, str]:
    return (lambda v: _number(v) and v > low), f"a number > {low}"


def _fraction(upper_open: bool = False) -> tuple[Callable, str]:
    if upper_open:
        return (lambda v: _number(v) and 0 <= v < 1), "in [0, 1)"
    return (lambda v: _number(v) and 0 <= v <= 1), "in [0, 1]"


def _count(low: int) -> tuple[Callable, str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), (
        f"a whole number >= {low}"
    )


def _step_range(value) -> bool:
    from jaxvision.train.profiling import parse_steps  # jaxvision.train imports JAX

    try:
        parse_steps(value)
    except UserError:
        return False
    return True


RULES: dict[str, tuple[Callable, str]] = {
    "batch_size": _count(1),
    "image_size": _count(1),
    "total_steps": _count(0),  # 0: num_epochs over the train split
    "num_epochs": _above(0),
    "learning_rate": _at_least(0),
    "lr_batch_base": _above(0),
    "warmup_epochs": _at_least(0),
    "lr_end_factor": _fraction(),
    "warmup_bias_lr": _at_least(0),
    "warmup_momentum": (
        (lambda v: v is None or (_number(v) and 0 <= v <= 1)),
        "in [0, 1] or unset (None)",
    ),
    "ema_ramp": _at_least(0),
    "momentum": _fraction(),
    "weight_decay": _at_least(0),
    "grad_clip_norm": _at_least(0),
    "layer_decay": _fraction(),
    "ema_decay": _fraction(upper_open=True),
    "label_smoothing": _fraction(upper_open=True),
    "mixup_alpha": _at_least(0),
    "cutmix_alpha": _at_least(0),
    "mix_switch_prob": _fraction(),
    "mix_prob": _fraction(),
    "random_erasing": _fraction(),
    "randaugment_ops": _count(0),
    "randaugment_magnitude": _at_least(0),
    "repeated_augmentation": _count(1),
    "microbatches": _count(1),
    "pad": _count(0),
    "eval_crop_ratio": ((lambda v: _number(v) and 0 < v <= 1), "in (0, 1]"),
    "worker_count": _count(0),
    "log_every_steps": _count(0),  # 0: off (the last step still logs)
    "eval_every_steps": _count(0),  # 0: at the end only
    "checkpoint_every_steps": _count(0),  # 0: at the end and on preemption only
    "keep_checkpoints": _count(1),
    "profile_steps": (_step_range, "'' (off), 'a' or 'a,b' with 1 <= a <= b, e.g. '10,20'"),
    "quantize_training": ((lambda v: v in (None, "", "int8")), "'int8' or unset (None)"),
}


def check_training_config(config) -> None:
    """Raises UserError for the first field of `config` (a ConfigDict or dict) out of range,
    model options included (`*_rate`: dropout, drop path)."""
    for key, (valid, what) in RULES.items():
        if key in config and not valid(config[key]):
            raise UserError(
                f"{key}={config[key]!r} is out of range: it must be {what} (set --config.{key}=...)"
            )
    valid, what = _fraction(upper_open=True)
    for key, value in dict(config.get("model_kwargs") or {}).items():
        if key.endswith("_rate") and not valid(value):
            raise UserError(
                f"model_kwargs.{key}={value!r} is out of range: it must be {what} "
                f"(set --config.model_kwargs.{key}=...)"
            )
