"""Figures of a run: a confusion matrix and the training curves, as PNG files.

Drawn through matplotlib's object API on an Agg canvas, never `pyplot`: no display is needed and
the process-wide backend is left as it is.
"""

import json
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Above this many classes the cells are too small for numbers or class names.
ANNOTATE_MAX_CLASSES = 20
NAMED_TICKS_MAX_CLASSES = 50


def _save(fig: Figure, path: str, dpi: int = 100) -> None:
    FigureCanvasAgg(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def plot_confusion(
    confusion: np.ndarray, class_names: Sequence[str] | None, path: str, title: str = ""
) -> None:
    """Writes the row-normalised confusion matrix (each true class sums to 1) as a PNG.

    confusion: [K, K] int, rows true class, columns predicted. K <= 20: every cell carries its
    value and both axes the class names; K <= 50: names, no values; larger K (up to ~1000): a
    heat map with numeric ticks, one pixel or more per class.
    """
    confusion = np.asarray(confusion, np.float64)
    k = confusion.shape[0]
    if confusion.shape != (k, k):
        raise ValueError(f"confusion matrix must be square, got {confusion.shape}")
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for {k} classes")
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)

    side = min(max(4.0, 0.45 * k + 2.0), 12.0)
    # Enough dots that each of up to ~1000 classes gets at least a pixel.
    dpi = 100 if k <= 400 else 150
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion, row-normalised ({k} classes)")
    if k <= NAMED_TICKS_MAX_CLASSES:
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90, fontsize=8 if k <= ANNOTATE_MAX_CLASSES else 6)
        ax.set_yticks(range(k), names, fontsize=8 if k <= ANNOTATE_MAX_CLASSES else 6)
    if k <= ANNOTATE_MAX_CLASSES:
        for i in range(k):
            for j in range(k):
                value = normalised[i, j]
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    _save(fig, path, dpi)


def read_metrics(metrics_jsonl_path: str) -> list[dict]:
    """The records of a `metrics.jsonl` (see `reporting.MetricsLog`), in file order."""
    with open(metrics_jsonl_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(metrics_jsonl_path: str, path: str) -> None:
    """Writes one PNG with three panels against step: every `*/loss`, every `*/top1` (e.g.
    `train/top1`, `eval/top1`, `eval_ema/top1`) and `train/lr`, read from a `metrics.jsonl`."""
    records = read_metrics(metrics_jsonl_path)
    keys = sorted({k for r in records for k in r if k != "step"})
    panels = (
        ("loss", [k for k in keys if k.endswith("/loss")]),
        ("top-1 accuracy", [k for k in keys if k.endswith("/top1")]),
        ("learning rate", [k for k in keys if k.endswith("/lr")]),
    )
    fig = Figure(figsize=(15, 4))
    for index, (title, panel_keys) in enumerate(panels):
        ax = fig.add_subplot(1, 3, index + 1)
        for key in panel_keys:
            steps, values = _series(records, key)
            # Evals are sparse: markers show where each one was.
            marker = "o" if len(steps) <= 50 and not key.startswith("train/") else None
            ax.plot(steps, values, label=key, marker=marker, markersize=3)
        if panel_keys:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
