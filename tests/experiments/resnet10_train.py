"""`python -m experiments.train` with one more model: `resnet10`, a ResNet-18 with one
BasicBlock per stage (every kind of layer of a ResNet-18, BatchNorm included, half the blocks to
compile). The tests about processes (signals, several hosts) run it:

  python -m tests.experiments.resnet10_train --config=... --config.model=resnet10 --workdir=DIR

In a test's own process, `with registered(): ...` trains the same model.
"""

if __name__ == "__main__":
    from jaxvision import signals

    signals.remember_sigterm()  # first, as in experiments/train.py: the imports take seconds

import contextlib  # noqa: E402
import functools  # noqa: E402

from jaxvision import models  # noqa: E402
from jaxvision.models.resnet import BasicBlock, ResNet  # noqa: E402

NAME = "resnet10"
RESNET10 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock)


@contextlib.contextmanager
def registered():
    """Within the block, `resnet10` is a model name in this process."""
    models.MODELS.register(NAME, RESNET10)
    try:
        yield
    finally:
        models.MODELS.unregister(NAME)


if __name__ == "__main__":
    from experiments.classification import train_and_evaluate
    from jaxvision import cli

    models.MODELS.register(NAME, RESNET10)
    cli.run(train_and_evaluate)
