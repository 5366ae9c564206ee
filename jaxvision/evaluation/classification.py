"""The classification evaluator: top-1/top-5/loss, macro precision/recall/F1, per-class reports
and the confusion matrix."""

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.evaluation.metrics import per_class_report


class ClassificationEvaluator:
    """Adds up the eval step's per-batch sums (on the device: one transfer per pass) and turns
    them into metrics: each sum over the count of real examples.

    evaluator.add(outputs)  # for each batch: {"count", "loss", "top1", "top5", "confusion"}
    metrics = evaluator.result("eval", workdir=..., step=...)
    """

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.sums = None

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        """outputs: one eval batch's sums; batch: its host arrays (unused here)."""
        self.sums = outputs if self.sums is None else jax.tree.map(jnp.add, self.sums, outputs)

    def result(self, prefix: str, *, workdir: str | None = None, step: int = 0) -> dict:
        """{"<prefix>/loss", "/top1", "/top5", "/macro_precision", "/macro_recall",
        "/macro_f1"}; with `workdir`, also the per-class report and confusion matrix files."""
        sums = jax.device_get(self.sums)
        count = max(float(sums["count"]), 1.0)
        # loss, top1, top5, then any other per-example sum a task adds (distillation: agreement).
        extra = sorted(set(sums) - {"count", "confusion", "loss", "top1", "top5"})
        metrics = {
            f"{prefix}/{k}": float(sums[k]) / count for k in ("loss", "top1", "top5", *extra)
        }
        self.confusion = np.asarray(sums["confusion"], np.int64)
        self.report = per_class_report(self.confusion)
        metrics |= {
            f"{prefix}/macro_{k}": self.report[f"macro_{k}"] for k in ("precision", "recall", "f1")
        }
        if workdir is not None:
            self.write_reports(workdir, step, prefix, metrics)
        return metrics

    def write_reports(self, workdir: str, step: int, prefix: str, metrics: dict) -> None:
        """Per-class precision/recall/F1 to `<workdir>/eval/<prefix>_step<N>.json` and the
        confusion matrix to `<workdir>/plots/confusion_<prefix>.png` (process 0 only)."""
        if jax.process_index() != 0:
            return
        from jaxvision.evaluation import plots  # matplotlib: not needed to train or benchmark

        report = self.report
        macro = {k: v for k, v in metrics.items() if "/macro_" in k}
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        per_class = {
            name: {
                "precision": float(report["precision"][i]),
                "recall": float(report["recall"][i]),
                "f1": float(report["f1"][i]),
                "support": int(report["support"][i]),
            }
            for i, name in enumerate(self.class_names)
        }
        with open(os.path.join(workdir, "eval", f"{prefix}_step{step}.json"), "w") as f:
            record = {"step": step, **macro, "per_class": per_class}
            json.dump(record | {"confusion": self.confusion.tolist()}, f)
        plots.plot_confusion(
            self.confusion,
            self.class_names,
            os.path.join(workdir, "plots", f"confusion_{prefix}.png"),
            title=f"{prefix}, step {step}",
        )

    def table(self, metrics: dict) -> str:
        """A plain-text table of `metrics` and the per-class rows, for a terminal."""
        lines = [f"{name:<24} {value:.4f}" for name, value in sorted(metrics.items())]
        lines.append(f"{'class':<24} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        report = self.report
        for i, name in enumerate(self.class_names):
            lines.append(
                f"{str(name)[:24]:<24} {report['precision'][i]:9.4f} {report['recall'][i]:9.4f}"
                f" {report['f1'][i]:9.4f} {int(report['support'][i]):8d}"
            )
        return "\n".join(lines)
