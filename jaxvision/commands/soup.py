"""Model soups: averages the weights of fine-tunes of one model into a new workdir.

  jaxvision soup --workdir=A --workdir=B [--workdir=C ...] --out=DIR \
      [--recipe=uniform|greedy] [--held_out=test|train]

Wortsman et al. 2022: fine-tunes that start from the same weights can be averaged into one
model that costs what a member costs. `uniform` averages every member; `greedy` sorts them by
their top-1 on the held-out split and adds each only if the soup's top-1 does not fall. Every
variable collection is averaged (BatchNorm statistics too), and the EMA weights when the
members kept them.

DIR becomes a workdir like any other: config.json and model.json of the first member and a
checkpoint at its step (optimizer state included): rerunning the members' training command on
DIR evaluates the soup and prints its `final:` line, `init_from=DIR` fine-tunes it, and
`jaxvision evaluate --workdir=DIR` uses it unchanged. The members' digits set has
no validation split: greedy selection on `test` then reads the test set, say so when you report.
"""

import json
import os
import shutil

import jax
import numpy as np
from absl import flags

from jaxvision import cli, ensembles, evaluation
from jaxvision.checkpoint import Checkpointer
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import split_metrics, split_source
from jaxvision.predictor import Predictor
from jaxvision.train import reporting

FLAGS = flags.FLAGS


def read_state(workdir: str):
    """(the newest readable state as a numpy tree, its meta, its step) of a member."""
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    saved = checkpointer.newest_item_metadata()
    if saved is None:
        raise UserError(f"no readable checkpoint in {workdir}/checkpoints: train the member first")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), saved
    )
    try:
        state, meta, skipped = checkpointer.restore_newest_readable(abstract)
    finally:
        checkpointer.close()
    for line in skipped:  # a member must not pass for its newest step
        reporting.note(f"skipped a damaged checkpoint of {workdir}, {line}")
    return jax.device_get(state), meta, int(state["step"])


def make_soup(workdirs: list[str], recipe: str, held_out: str) -> tuple[dict, list[int], dict]:
    """(the soup's model entry {"variables", "ema_params"}, the members chosen, held-out
    metrics of each member and of the soup)."""
    predictors = [Predictor.from_workdir(w) for w in workdirs]
    first = predictors[0]
    for w, p in zip(workdirs, predictors, strict=True):
        if (p.record["model"], p.record["model_kwargs"]) != (
            first.record["model"],
            first.record["model_kwargs"],
        ) or p.class_names != first.class_names:
            raise UserError(
                f"{w} holds another model or classes than {workdirs[0]}: a soup "
                "averages fine-tunes of one model"
            )
    source, batch_size = split_source(workdirs[0], held_out)
    scores = {}

    def top1(variables, name="soup") -> float:
        metrics, _ = split_metrics(first, variables, source, batch_size, name)
        scores.update(metrics)
        return metrics[f"{name}/top1"]

    members = [p.variables for p in predictors]  # EMA weights where kept, as evaluated
    for i, variables in enumerate(members):
        top1(variables, f"member_{i}")
    if recipe == "uniform":
        chosen = list(range(len(members)))
        soup = ensembles.uniform_soup(members)
    else:
        ranked = sorted(range(len(members)), key=lambda i: -scores[f"member_{i}/top1"])
        soup, chosen = ensembles.greedy_soup(members, top1, order=ranked)
    top1(soup)
    return soup, chosen, scores


def write_workdir(out: str, first: str, soup: dict, step_meta) -> None:
    """`out` as a workdir: the first member's records, a checkpoint holding the soup."""
    if os.path.exists(os.path.join(out, "checkpoints")):
        raise UserError(f"{out} already holds checkpoints: choose a new --out")
    os.makedirs(out, exist_ok=True)
    for name in ("config.json", "model.json"):
        shutil.copy(os.path.join(first, name), os.path.join(out, name))
    state, meta, step = step_meta
    with open(os.path.join(out, "model.json")) as f:
        key = json.load(f)["model_key"]
    model = state["models"][key]
    model["variables"] = soup  # the raw weights and their average both become the soup
    if model.get("ema_params") is not None:
        model["ema_params"] = soup["params"]
    checkpointer = Checkpointer(os.path.join(out, "checkpoints"))
    checkpointer.save(step, jax.tree.map(np.asarray, state), meta, force=True)
    checkpointer.close()


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_multi_string("workdir", None, "A member's workdir; two or more.")
    flags.DEFINE_string("out", None, "The soup's new workdir.")
    flags.DEFINE_enum("recipe", "uniform", ["uniform", "greedy"], "How members join.")
    flags.DEFINE_enum(
        "held_out", "test", ["test", "train"], "The split that scores members and soups."
    )


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    workdirs = FLAGS.workdir or []
    if len(workdirs) < 2 or not FLAGS.out:
        cli.fail("a soup needs two or more --workdir members and --out=DIR for the result")
    try:
        soup, chosen, scores = make_soup(workdirs, FLAGS.recipe, FLAGS.held_out)
        write_workdir(FLAGS.out, workdirs[0], soup, read_state(workdirs[0]))
    except UserError as e:
        cli.fail(str(e))
    print(
        f"{FLAGS.recipe} soup of {reporting.plural(len(chosen), 'member')} "
        f"({', '.join(f'member_{i}' for i in chosen)}) on {FLAGS.held_out}:"
    )
    print(evaluation.metrics_table({k: v for k, v in scores.items() if k.endswith("/top1")}))
    print(f"written to {FLAGS.out}")
