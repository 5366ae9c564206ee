"""Magnitude pruning of a trained classifier, then a short fine-tune that keeps the mask.

  jaxvision prune --workdir=DIR --sparsity=0.5 [--structured] [--norm=l1|l2] \\
      [--out=DIR_pruned] [--steps=100] [--learning_rate=...]

Unstructured (default): the smallest-|w| share `sparsity` of all conv and dense kernel weights,
under one global threshold, is set to 0. --structured: in each kernel, that share of its output
channels with the smallest L1 (--norm=l2: L2) norm. The classifier stays dense. Each requested
sparsity (--sparsity=0.3,0.5,0.7) is then fine-tuned for --steps steps by the run's own program
(model.json's "program", e.g. experiments.classification), its config as trained with init_from
= the pruned weights and prune_masks = the masks: the optimizer re-applies the mask after every
step and keeps it in its state, so the checkpoints carry it and rerunning the command resumes
with it (EMA is off: an average of masked weights is not sparse).

Writes under --out: `sparsity_<s>/start/` (`structured_<norm>_sparsity_<s>/...` with
--structured: the pruned weights before fine-tuning, masks.npz), `.../finetune/` (the
fine-tuned workdir: evaluate, export and serve it like any run),
and prune.json, prune.txt and prune.png: test top-1 against sparsity, pruned as is for a sweep
of sparsities and after the fine-tune for the requested ones.
"""

import importlib
import json
import os

import jax
import numpy as np
from absl import flags

from jaxvision import cli, models
from jaxvision.compress import measure, prune
from jaxvision.compress.quantize import QuantizedClassification
from jaxvision.errors import UserError
from jaxvision.evaluation.workdirs import load_config, split_source
from jaxvision.predictor import Predictor

FLAGS = flags.FLAGS


def shares(values: list[str], flag: str) -> list[float]:
    """--flag=0.3,0.5 -> [0.3, 0.5], each checked to be in [0, 1)."""
    try:
        shares = [float(v) for v in values]
    except ValueError:
        raise UserError(f"--{flag}={','.join(values)}: give numbers in [0, 1)") from None
    if any(not 0 <= s < 1 for s in shares):
        raise UserError(f"--{flag}={','.join(values)}: every share must be in [0, 1)")
    return shares


# The program that trained a run is recorded in its model.json ("program"); runs written before
# that record existed were trained by this one. A fine-tune is a run of that program (forked
# programs included), imported by its name when one runs, as `python -m` finds it: the library
# imports nothing from experiments/.
DEFAULT_PROGRAM = "experiments.classification"


def training_program(record: dict):
    """(train_and_evaluate(config, workdir), default_config()) of the program that trained the
    run whose model.json is `record`."""
    name = record.get("program") or DEFAULT_PROGRAM
    try:
        program = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if not name.startswith(e.name or "\0"):
            raise
        raise UserError(
            f"fine-tuning runs the program that trained the run, {name}, which is not on the "
            "Python path: run from the folder that holds it, or prune with --steps=0"
        ) from None
    missing = [a for a in ("train_and_evaluate", "default_config") if not hasattr(program, a)]
    if missing:
        raise UserError(
            f"the run's program {name} has no {' or '.join(missing)}: prune with --steps=0, or "
            "give the program a train_and_evaluate(config, workdir) and a default_config()"
        )
    return program.train_and_evaluate, program.default_config


def finetune(
    workdir: str, record: dict, start: str, masks_path: str, out: str, steps: int, lr
) -> dict:
    """Fine-tunes the pruned weights in `start` with the masks kept, by the program that trained
    `workdir` (model.json: `record`) with its config as trained; returns the final eval."""
    train_and_evaluate, default_config = training_program(record)
    config = load_config(workdir, default_config())
    config.init_from = start
    config.init_new_head = False
    config.prune_masks = masks_path
    config.total_steps = steps
    config.learning_rate = lr if lr is not None else config.learning_rate / 10
    config.warmup_epochs = 0.0
    config.ema_decay = 0.0
    config.eval_every_steps = 0
    config.checkpoint_every_steps = min(config.checkpoint_every_steps or steps, steps)
    return train_and_evaluate(config, out)


def prune_run(
    workdir: str, out: str, sparsities, *, structured: bool, norm: str, steps: int, lr, sweep
):
    """Prunes `workdir`'s model at each of `sparsities` (and evaluates `sweep`); returns the
    report's rows: {"sparsity", "top1_pruned", "top1_finetuned" (None: not fine-tuned)}."""
    source = Predictor.from_workdir(workdir)
    if source.kind != "classification" or isinstance(source.task, QuantizedClassification):
        raise UserError(f"{workdir} is not a float classifier: prune a trained classifier")
    variables = jax.device_get(source.variables)
    skip = (models.classifier(source.record["model"]),)
    test, batch_size = split_source(workdir, "test")
    rows = {}
    for share in sorted(set(sweep) | set(sparsities)):
        masks = prune.magnitude_masks(
            variables["params"], share, structured=structured, norm=norm, skip=skip
        )
        pruned = {**variables, "params": prune.apply_masks(variables["params"], masks)}
        predicted, labels = measure.split_predictions(source, test, batch_size, pruned)
        row = {"sparsity": share, "top1_pruned": float(np.mean(predicted == labels))}
        row["top1_finetuned"] = None
        if share in sparsities and steps > 0:
            kind = f"structured_{norm}_" if structured else ""  # a rerun of another kind
            run = os.path.join(out, f"{kind}sparsity_{share:.2f}")  # does not resume this one
            start, tuned = os.path.join(run, "start"), os.path.join(run, "finetune")
            masks_path = os.path.join(start, "masks.npz")
            if not os.path.isfile(masks_path):  # else: a rerun resumes the same fine-tune
                measure.write_workdir(
                    start,
                    workdir,
                    source.record,
                    pruned,
                    source.step,
                    {"eval/top1": row["top1_pruned"]},
                )
                prune.save_masks(masks_path, masks)
            final = finetune(workdir, source.record, start, masks_path, tuned, steps, lr)
            row["top1_finetuned"] = float(final["eval/top1"])
            tuned_params = Predictor.from_workdir(tuned).variables["params"]
            row["zeros_after_finetune"] = prune.sparsity_of(tuned_params, masks)
        row["weights_pruned"] = int(sum(np.size(m) - np.sum(m) for m in masks.values()))
        rows[share] = row
    return [rows[s] for s in sorted(rows)]


def prune_table(rows: list[dict], kind: str) -> str:
    """Test top-1 against sparsity, as a text table."""
    lines = [f"{kind} magnitude pruning: test top-1", f"{'sparsity':>8} {'pruned':>8} {'tuned':>8}"]
    for r in rows:
        tuned = "" if r["top1_finetuned"] is None else f"{r['top1_finetuned']:.4f}"
        lines.append(f"{r['sparsity']:>8.2f} {r['top1_pruned']:>8.4f} {tuned:>8}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, kind: str) -> None:
    """Test top-1 against sparsity: pruned as is, and after fine-tuning."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["sparsity"] for r in rows], [r["top1_pruned"] for r in rows], "o-", label="pruned")
    tuned = [r for r in rows if r["top1_finetuned"] is not None]
    if tuned:
        ax.plot(
            [r["sparsity"] for r in tuned],
            [r["top1_finetuned"] for r in tuned],
            "s",
            label="fine-tuned",
        )
    ax.set_xlabel(f"sparsity ({kind})")
    ax.set_ylabel("test top-1")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("workdir", None, "A trained classifier's workdir.")
    flags.DEFINE_string("out", None, "Where the pruned runs go; default DIR_pruned.")
    flags.DEFINE_list("sparsity", ["0.5"], "Shares of weights (channels) to prune.")
    flags.DEFINE_bool("structured", False, "Prune whole output channels.")
    flags.DEFINE_enum("norm", "l1", ["l1", "l2"], "Channel norm for --structured.")
    flags.DEFINE_integer("steps", 100, "Fine-tuning steps per sparsity (0: none).")
    flags.DEFINE_float("learning_rate", None, "Fine-tuning lr; default the run's / 10.")
    flags.DEFINE_list(
        "sweep", [f"{s / 10:.1f}" for s in range(10)], "Sparsities evaluated without fine-tuning."
    )


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if not FLAGS.workdir:
        cli.fail("--workdir=DIR (a trained classifier) is required")
    out = FLAGS.out or FLAGS.workdir.rstrip("/") + "_pruned"
    kind = f"structured ({FLAGS.norm})" if FLAGS.structured else "unstructured"
    try:
        rows = prune_run(
            FLAGS.workdir,
            out,
            shares(FLAGS.sparsity, "sparsity"),
            structured=FLAGS.structured,
            norm=FLAGS.norm,
            steps=FLAGS.steps,
            lr=FLAGS.learning_rate,
            sweep=shares(FLAGS.sweep, "sweep"),
        )
    except UserError as e:
        cli.fail(str(e))
    os.makedirs(out, exist_ok=True)
    text = prune_table(rows, kind)
    with open(os.path.join(out, "prune.json"), "w") as f:
        json.dump({"workdir": FLAGS.workdir, "kind": kind, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "prune.txt"), "w") as f:
        f.write(text + "\n")
    plot(rows, os.path.join(out, "prune.png"), kind)
    print(text)
    print(f"curve: {os.path.join(out, 'prune.png')}")
