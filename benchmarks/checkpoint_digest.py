"""What the digests written with every checkpoint cost (`jaxvision.digests`), on save and on
restore, for the digits ResNet-18's train state and a ResNet-50's (ImageNet head, SGD momentum).

  python -m benchmarks.checkpoint_digest [--repeats=5] [--models=digits,resnet50]

For each state, one JSON line: its size; the digest's first call (compiling its program) and its
median afterwards; the median of a synchronous save (Orbax, to a temporary directory) and of a
restore, each with and without the digest (saves without it record no digests; restores without
it skip the check). Medians of `--repeats` calls, in this process, on its default device.
"""

import json
import os
import tempfile
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks import timing
from jaxvision import checkpoint, digests, models
from jaxvision.sharding import abstract_like
from jaxvision.tasks.classification import Classification
from jaxvision.train import optim
from jaxvision.train.state import init_model_state, init_train_state

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The benchmark's flags, defined when it runs: tests import it beside other benchmarks
    that define flags of the same names."""
    flags.DEFINE_integer("repeats", 5, "Timed calls per measurement.")
    flags.DEFINE_list("models", ["digits", "resnet50"], "States: digits, resnet50.")


# name -> (model, build options, image shape for init, channels)
_STATES = {
    "digits": ("resnet18", {"num_classes": 10, "stem": "small", "width": 16}, (1, 8, 8, 1)),
    "resnet50": ("resnet50", {"num_classes": 1000}, (1, 32, 32, 3)),
}


def train_state(name: str):
    """A fresh train state of `name` (parameters, BatchNorm statistics, SGD momentum) as the
    classification runs build it."""
    model_name, options, shape = _STATES[name]
    model = models.build(model_name, **options)
    tx = optim.make_optimizer("sgd", optax.constant_schedule(0.1), weight_decay=1e-4)
    task = Classification(model, mean=(0.0,) * shape[-1], std=(1.0,) * shape[-1])
    example = {"image": np.zeros(shape, np.uint8)}
    model_state = init_model_state(task.init_variables(example), tx, jax.random.PRNGKey(0))
    return jax.block_until_ready(init_train_state({"model": model_state}))


def measure(name: str, repeats: int) -> dict:
    state = train_state(name)
    leaves = jax.tree.leaves(state)
    start = time.perf_counter()
    digests.state_digests(state)
    first = time.perf_counter() - start
    digest_s = timing.median_seconds(lambda: digests.state_digests(state), repeats)
    shardings = jax.tree.map(lambda x: x.sharding, state)
    abstract = abstract_like(state, shardings)
    result = {
        "state": name,
        "arrays": len(leaves),
        "mbytes": round(sum(x.nbytes for x in leaves) / 2**20, 1),
        "device": jax.devices()[0].device_kind,
        "digest_first_s": round(first, 3),
        "digest_s": round(digest_s, 4),
    }
    for label, digesting in (("without", False), ("with", True)):
        patch = (
            mock.patch.object(digests, "state_digests", lambda tree: {})
            if not digesting
            else mock.patch.object(digests, "state_digests", digests.state_digests)
        )
        with tempfile.TemporaryDirectory() as tmp, patch:
            saver = checkpoint.Checkpointer(tmp, keep=repeats + 2, async_save=False)
            step = iter(range(1, 10**6))
            save_s = timing.median_seconds(
                lambda s=saver, i=step: s.save(next(i), state, force=True), repeats
            )
            restore_s = timing.median_seconds(
                lambda s=saver: jax.block_until_ready(s.restore(abstract)), repeats
            )
            saver.close()
        result[f"save_{label}_digest_s"] = round(save_s, 3)
        result[f"restore_{label}_digest_s"] = round(restore_s, 3)
    return result


def main(argv):
    del argv
    for name in FLAGS.models:
        print(json.dumps(measure(name, FLAGS.repeats)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    jnp.zeros(())  # the backend starts before timing
    define_flags()
    app.run(main)
