"""Seconds per training step of a detection recipe: its own jitted step on its own batches.

  python -m benchmarks.detection_step_time \\
      --config=experiments/configs/detection/fasterrcnn_shapes.py \\
      [--config.model_kwargs.roi_sampling_ratio=2 ...] [--steps=8]

Builds the run as `experiments.detection` does (data, detector, task, optimizer, sharding), puts
--steps + 2 of its first training batches on the device, then times one step after another
(waiting for each) after two untimed ones (the compile and a warm-up). Prints one JSON line:
the median and fastest step, and images per second at the median. What a recipe change costs
per step, without the loop, the evaluation or a checkpoint; a run's own `train/img_per_s`
includes the input pipeline sharing the cores.
"""

import json
import statistics
import time

import jax
from absl import flags

from experiments import detection
from jaxvision import cli, data
from jaxvision.train import steps

_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps (after the compile and one warm-up).")


def time_steps(config, workdir=None):
    del workdir  # writes nothing
    run = detection.setup(config)
    state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
    train_step = steps.jit_train_step(
        run.train_step, run.mesh, run.state_sharding, run.data_sharding
    )
    batches = [
        data.make_global_batch(batch, run.data_sharding)
        for batch in data.train_batches(
            run.train_source,
            run.train_transform,
            global_batch_size=config.batch_size,
            seed=config.seed,
            num_steps=_STEPS.value + 2,
        )
    ]
    seconds = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)
        if i >= 2:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    record = {
        "model": config.model,
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "steps": len(seconds),
        "step_s_median": round(median, 4),
        "step_s_min": round(min(seconds), 4),
        "img_per_s": round(config.batch_size / median, 1),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    cli.run(time_steps, default_config=detection.DEFAULT_CONFIG, needs_workdir=False)
