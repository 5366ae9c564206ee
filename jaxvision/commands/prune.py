"""Magnitude pruning of a trained classifier, then a short fine-tune that keeps the mask.

  python -m experiments.prune --workdir=DIR --sparsity=0.5 [--structured] [--norm=l1|l2] \\
      [--out=DIR_pruned] [--steps=100] [--learning_rate=...]

Unstructured (default): the smallest-|w| share `sparsity` of all conv and dense kernel weights,
under one global threshold, is set to 0. --structured: in each kernel, that share of its output
channels with the smallest L1 (--norm=l2: L2) norm. The classifier stays dense. Each requested
sparsity (--sparsity=0.3,0.5,0.7) is then fine-tuned for --steps steps by the run's own program
(classification), its config as trained with init_from = the pruned weights and prune_masks =
the masks: the optimizer re-applies the mask after every step and keeps it in its state, so
the checkpoints carry it and rerunning the command resumes with it (EMA is off: an average of
masked weights is not sparse).

Writes under --out: `sparsity_<s>/start/` (`structured_<norm>_sparsity_<s>/...` with
--structured: the pruned weights before fine-tuning, masks.npz), `.../finetune/` (the
fine-tuned workdir: evaluate, export and serve it like any run),
and prune.json, prune.txt and prune.png: test top-1 against sparsity, pruned as is for a sweep
of sparsities and after the fine-tune for the requested ones.
"""

import json
import os
import sys

from absl import app, flags

from experiments.compression import plot, prune_run, prune_table, shares
from jaxvision import cli
from jaxvision.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained classifier's workdir.")
_OUT = flags.DEFINE_string("out", None, "Where the pruned runs go; default DIR_pruned.")
_SPARSITY = flags.DEFINE_list("sparsity", ["0.5"], "Shares of weights (channels) to prune.")
_STRUCTURED = flags.DEFINE_bool("structured", False, "Prune whole output channels.")
_NORM = flags.DEFINE_enum("norm", "l1", ["l1", "l2"], "Channel norm for --structured.")
_STEPS = flags.DEFINE_integer("steps", 100, "Fine-tuning steps per sparsity (0: none).")
_LR = flags.DEFINE_float("learning_rate", None, "Fine-tuning lr; default the run's / 10.")
_SWEEP = flags.DEFINE_list(
    "sweep", [f"{s / 10:.1f}" for s in range(10)], "Sparsities evaluated without fine-tuning."
)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}")
    if not _WORKDIR.value:
        cli.fail("--workdir=DIR (a trained classifier) is required")
    out = _OUT.value or _WORKDIR.value.rstrip("/") + "_pruned"
    kind = f"structured ({_NORM.value})" if _STRUCTURED.value else "unstructured"
    try:
        rows = prune_run(
            _WORKDIR.value,
            out,
            shares(_SPARSITY.value, "sparsity"),
            structured=_STRUCTURED.value,
            norm=_NORM.value,
            steps=_STEPS.value,
            lr=_LR.value,
            sweep=shares(_SWEEP.value, "sweep"),
        )
    except UserError as e:
        cli.fail(str(e))
    os.makedirs(out, exist_ok=True)
    text = prune_table(rows, kind)
    with open(os.path.join(out, "prune.json"), "w") as f:
        json.dump({"workdir": _WORKDIR.value, "kind": kind, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "prune.txt"), "w") as f:
        f.write(text + "\n")
    plot(rows, os.path.join(out, "prune.png"), kind)
    print(text)
    print(f"curve: {os.path.join(out, 'prune.png')}")


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
