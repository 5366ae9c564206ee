"""Loop overhead: steps/s of the shared training loop against a bare `for` over the same step.

  python -m benchmarks.loop_overhead [--steps=120] [--repeats=3] [--batch_size=512] \\
      [--model=simple_cnn] [--augment]

Both sides train the same run (the digits config's simple CNN, by default on the digits' own
8 px without augmentation) in one process. The loop is `jaxvision.train.loop.train_and_evaluate`:
input pipeline, metric sums, non-finite watch, log lines, preemption checks; its steps/s comes
from its own log windows (the compiling first step excluded). The bare side is
`for batch in batches: state, _ = train_step(state, batch)` over the same jitted step on the
same batches, built and put on the device before timing, then one wait at the end. The pairs
alternate (`--repeats`): each prints one JSON line with its ratio loop / bare (goal >= 0.95).
A third side, `bare_with_input`, is the same `for` fed by the input pipeline as it goes: on a
CPU machine, where building batches takes cores from the "device", loop / bare_with_input is
the loop's own cost and bare_with_input / bare the input's. Other work on a shared machine only
ever slows a measurement down, so the last line compares the best of each side (as `timeit`
does) and gives the median of the pairs' ratios.
"""

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

import jax
from absl import app, flags, logging

from experiments import classification
from experiments.configs.classification.simple_cnn_digits import get_config
from jaxvision import data
from jaxvision.train import loop, steps
from jaxvision.train.reporting import plural

_STEPS = flags.DEFINE_integer("steps", 120, "Steps per measurement (the first compiles).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Loop / bare pairs, alternated.")
_BATCH = flags.DEFINE_integer("batch_size", 512, "Global batch size.")
_LOG_EVERY = flags.DEFINE_integer("log_every_steps", 40, "The loop's log cadence.")
_MODEL = flags.DEFINE_string("model", "simple_cnn", "Model (a digits-sized one).")
_AUGMENT = flags.DEFINE_bool(
    "augment",
    False,
    "Keep the digits recipe's input (16 px, pad-crop: ~70 us per image on the host). Off, the "
    "digits stay 8 px and the host only gathers and stacks them, so that on a CPU machine, where "
    "the host shares its cores with the 'device', the figure is the loop's cost, not the "
    "augmentation's.",
)


def benchmark_config():
    """The digits recipe as a pure training-speed run: no checkpoint or eval before the end."""
    config = get_config()
    config.model = _MODEL.value
    config.batch_size = _BATCH.value
    config.total_steps = _STEPS.value
    config.log_every_steps = _LOG_EVERY.value
    config.checkpoint_every_steps = 0
    if not _AUGMENT.value:  # the digits at their own 8 px: no resize, no crop
        config.crop, config.image_size = "none", 8
    return config


def loop_steps_per_s(config) -> float:
    """Steps/s of `train_and_evaluate`, from its metrics.jsonl windows (step 1 excluded)."""
    with tempfile.TemporaryDirectory() as workdir:
        # The run's final: line is not this program's output.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            loop.train_and_evaluate(config, workdir, classification.setup)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f]
    windows = [r for r in records if "train/img_per_s" in r]
    seconds, last = 0.0, 1
    for record in windows:
        seconds += (record["step"] - last) * config.batch_size / record["train/img_per_s"]
        last = record["step"]
    return (last - 1) / seconds


def bare_steps_per_s(config, prepared: bool = True) -> float:
    """Steps/s of a plain `for` over the loop's jitted step. prepared: the batches are built
    and put on the device before timing; else the `for` takes them from the input pipeline as
    it goes (what the loop does, without the rest of the loop)."""
    run = classification.setup(config)
    state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
    train_step = steps.jit_train_step(
        run.train_step, run.mesh, run.state_sharding, run.data_sharding
    )
    host_batches = data.train_batches(
        run.train_source,
        run.train_transform,
        global_batch_size=config.batch_size,
        seed=config.seed,
        num_steps=config.total_steps,
    )
    if prepared:
        batches = [data.make_global_batch(b, run.data_sharding) for b in host_batches]
        jax.block_until_ready(batches)
    else:
        batches = (data.make_global_batch(b, run.data_sharding) for b in host_batches)
    batches = iter(batches)
    state, metrics = train_step(state, next(batches))  # compiles
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for batch in batches:
        state, metrics = train_step(state, batch)
    jax.block_until_ready((state, metrics))
    return (config.total_steps - 1) / (time.perf_counter() - start)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax's info lines
    config = benchmark_config()
    print(
        f"{config.model} on digits at {config.image_size} px, batch {config.batch_size}, "
        f"{config.total_steps} steps, log every {config.log_every_steps}; "
        f"{plural(jax.device_count(), 'device')} ({jax.devices()[0].platform}), "
        f"{plural(os.cpu_count(), 'CPU')}",
        file=sys.stderr,
    )
    figures = {"loop": [], "bare": [], "bare_with_input": []}
    for repeat in range(_REPEATS.value):
        figures["bare"].append(bare_steps_per_s(config))
        figures["loop"].append(loop_steps_per_s(config))
        figures["bare_with_input"].append(bare_steps_per_s(config, prepared=False))
        row = {"repeat": repeat} | {f"{k}_steps_per_s": round(v[-1], 2) for k, v in figures.items()}
        row["ratio"] = round(figures["loop"][-1] / figures["bare"][-1], 3)
        row["ratio_to_bare_with_input"] = round(
            figures["loop"][-1] / figures["bare_with_input"][-1], 3
        )
        print(json.dumps(row), flush=True)
    best = {k: max(v) for k, v in figures.items()}
    summary = {f"best_{k}_steps_per_s": round(v, 2) for k, v in best.items()}
    summary["best_ratio"] = round(best["loop"] / best["bare"], 3)
    summary["best_ratio_to_bare_with_input"] = round(best["loop"] / best["bare_with_input"], 3)
    pairs = zip(figures["loop"], figures["bare"], strict=True)
    summary["median_ratio"] = round(statistics.median(r / b for r, b in pairs), 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(main)
