"""What a loss that is no longer finite is blamed on: the learning rate, or what was loaded."""

import math

import jax.numpy as jnp
import pytest

from jaxvision.train.guards import NonFiniteWatch


def _raised(watch: NonFiniteWatch, step: int) -> str:
    watch.add(step - 1, {"train/loss": jnp.float32(2.3), "train/grad_norm": jnp.float32(1.0)})
    watch.add(step, {"train/loss": jnp.float32(2.3), "train/grad_norm": jnp.float32(math.nan)})
    with pytest.raises(Exception) as raised:
        watch.check()
    return str(raised.value)


def test_a_fresh_run_blames_the_learning_rate():
    message = _raised(NonFiniteWatch(), 202)
    assert message.startswith("train/grad_norm is nan at step 202: the run stopped")
    assert "Lower the learning rate" in message


def test_right_after_a_resume_the_checkpoint_is_suspect_not_the_learning_rate():
    watch = NonFiniteWatch(
        loaded="the checkpoint at step 200 in /w/checkpoints",
        loaded_at=200,
        advice="move /w/checkpoints/200 aside",
    )
    assert _raised(watch, 202) == (
        "train/grad_norm is nan at step 202, 2 steps after loading the checkpoint at step 200 "
        "in /w/checkpoints: suspect the loaded values first (a resumed run repeats the steps of "
        "one that was not stopped), then any setting changed since they were written, such as "
        "the learning rate (no state was saved); move /w/checkpoints/200 aside"
    )
    later = NonFiniteWatch(loaded="the checkpoint at step 200 in /w", loaded_at=200)
    assert "Lower the learning rate" in _raised(later, 260)  # trained long enough since


def test_right_after_importing_weights_the_file_is_suspect():
    watch = NonFiniteWatch(loaded="the weights of --config.init_from=w.safetensors")
    message = _raised(watch, 1)
    assert "1 step after loading the weights of --config.init_from=w.safetensors" in message
    assert "Lower the learning rate" not in message
