"""The detection evaluator: COCO box AP / AR through pycocotools, per-class AP, precision-recall
curves and a grid of drawn detections.

The eval step hands back fixed-shape padded arrays in canvas pixels; the evaluator keeps each
real image's ground truth and valid detections on the host, and at the end builds pycocotools'
COCO objects in memory (no files), in original-image pixels, so its numbers are the ones
`COCO(gt.json).loadRes(dets.json)` + `COCOeval` give on the same data.
"""

import contextlib
import io
import json
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxvision.errors import UserError

# COCOeval.stats, in its order: AP over IoU .50:.95, at .50 and .75, by object size
# (small < 32² < medium < 96² < large, in annotation area), then AR with at most 1 / 10 / 100
# detections per image and AR by size.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
# Detections drawn in the picture grid score at least this much: below, most are noise.
DRAW_SCORE_THRESHOLD = 0.3
# Longest side of a drawn image in the grid: 16 canvases at full size make a huge PNG.
DRAW_MAX_SIDE = 384


class CocoEvaluator:
    """Keeps every real image's ground truth and detections and scores them with COCOeval.

    evaluator.add(outputs, batch)  # per eval batch; see `add` for the fields
    metrics = evaluator.result("eval", workdir=..., step=...)  # {"eval/AP": ..., ...}
    print(evaluator.table(metrics))

    A statistic with nothing to measure is -1, as pycocotools gives it: an area range with no
    ground truth (APs with no small objects), or every statistic when no image has any
    non-crowd ground truth. A class without ground truth has no per-class AP: `per_class`
    holds None for it and `table` leaves it out. No detections at all score 0 where there is
    ground truth.

    class_names: [K], index 0 the background; the COCO categories are the indices 1..K-1 whose
    name is not "N/A". max_pictures: real images kept (from `batch`) for the picture grid.
    """

    def __init__(self, class_names: Sequence[str], *, max_pictures: int = 16):
        self.class_names = list(class_names)
        self.category_ids = [i for i, n in enumerate(self.class_names) if i > 0 and n != "N/A"]
        self.max_pictures = max_pictures
        self.images = {}  # image_id -> that image's ground truth and detections, canvas pixels
        self.pictures = {}  # image_id -> uint8 [h, w, 3], the first real images of process 0
        self.per_class = {}
        self.precision = None

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        """Keeps the real images of one eval batch (every process's, on every process).

        outputs (jax or numpy, leading dimension B): detections "boxes" [B, D, 4] canvas
        pixels, "scores" [B, D], "classes" [B, D] int, "valid" [B, D] bool; ground truth
        "gt_boxes" [B, M, 4] canvas pixels, "gt_classes", "gt_mask", "gt_iscrowd", "gt_area"
        [B, M] (area in original pixels); "image_id" [B], "scale" [B, 2] (sy, sx: canvas
        pixels per original pixel, as the detection transforms give it; or [B], one for both),
        optionally "offset" [B, 2] (top, left: where the image starts on the canvas, for a
        centred letterbox; absent: 0, 0), "mask" [B] (False: a padding row). With several
        processes every process must call `add` (it gathers).
        batch: this process's host batch, `image` uint8 [b, S, S, 3] (and `image_id`, `mask`,
        `size`, `offset` when present): the first `max_pictures` real images are kept for
        drawing.
        """
        if jax.process_count() > 1:
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        else:
            outputs = jax.device_get(outputs)
        out = {k: np.asarray(v) for k, v in outputs.items()}
        for i in np.flatnonzero(out["mask"]):
            image_id = int(out["image_id"][i])
            if image_id in self.images:
                raise UserError(
                    f"image id {image_id} occurs twice in the evaluation split: COCO evaluation"
                    " needs a distinct image_id for every example"
                )
            gt, det = out["gt_mask"][i].astype(bool), out["valid"][i].astype(bool)
            # Boxes are kept relative to the image's corner on the canvas: then dividing by the
            # scale maps them back, and they draw on the picture cut out at that corner.
            shift = _xyxy_offset(out["offset"][i]) if "offset" in out else np.zeros(4)
            self.images[image_id] = {
                "scale": _xyxy_scale(out["scale"][i]),
                "gt_boxes": out["gt_boxes"][i][gt].astype(np.float64) - shift,
                "gt_classes": out["gt_classes"][i][gt].astype(np.int64),
                "gt_iscrowd": out["gt_iscrowd"][i][gt].astype(np.int64),
                "gt_area": out["gt_area"][i][gt].astype(np.float64),
                "boxes": out["boxes"][i][det].astype(np.float64) - shift,
                "scores": out["scores"][i][det].astype(np.float64),
                "classes": out["classes"][i][det].astype(np.int64),
            }
        if batch is not None and jax.process_index() == 0:
            self._keep_pictures(batch, out["image_id"])

    def _keep_pictures(self, batch: dict, image_ids: np.ndarray) -> None:
        if len(self.pictures) >= self.max_pictures:
            return
        images = np.asarray(batch["image"])
        mask = np.asarray(batch.get("mask", np.ones(len(images), bool)))
        # Process 0's rows come first in the gathered outputs when the batch has no ids.
        ids = np.asarray(batch.get("image_id", image_ids[: len(images)]))
        sizes, offsets = batch.get("size"), batch.get("offset")
        for i in np.flatnonzero(mask):
            if len(self.pictures) >= self.max_pictures:
                return
            picture = images[i]
            if sizes is not None:  # the resized image without the canvas's padding
                h, w = np.asarray(sizes[i])
                top, left = (0, 0) if offsets is None else np.asarray(offsets[i])
                picture = picture[top : top + h, left : left + w]
            self.pictures[int(ids[i])] = picture.copy()

    def coco_datasets(self) -> tuple[dict, list[dict]]:
        """The kept images as pycocotools sees them, in original pixels: the ground-truth
        dataset ({"images", "annotations", "categories"}, boxes [x, y, w, h] with the
        annotation's area and iscrowd, annotation ids from 1) and the detections
        ([{"image_id", "category_id", "bbox", "score"}], of the categories only)."""
        categories = set(self.category_ids)
        annotations, detections = [], []
        for image_id, image in self.images.items():
            for box, c, crowd, area in zip(
                image["gt_boxes"] / image["scale"],
                image["gt_classes"],
                image["gt_iscrowd"],
                image["gt_area"],
                strict=True,
            ):
                annotations.append(
                    {
                        "id": len(annotations) + 1,  # COCOeval takes id 0 for "unmatched"
                        "image_id": image_id,
                        "category_id": int(c),
                        "bbox": _xywh(box),
                        "area": float(area),
                        "iscrowd": int(crowd),
                    }
                )
            for box, c, score in zip(
                image["boxes"] / image["scale"], image["classes"], image["scores"], strict=True
            ):
                if int(c) in categories:
                    detections.append(
                        {
                            "image_id": image_id,
                            "category_id": int(c),
                            "bbox": _xywh(box),
                            "score": float(score),
                        }
                    )
        dataset = {
            "images": [{"id": image_id} for image_id in self.images],
            "annotations": annotations,
            "categories": [{"id": c, "name": self.class_names[c]} for c in self.category_ids],
        }
        return dataset, detections

    def result(self, prefix: str, *, workdir: str | None = None, step: int = 0) -> dict:
        """{"<prefix>/AP", "/AP50", "/AP75", "/APs", "/APm", "/APl", "/AR1", "/AR10", "/AR100",
        "/ARs", "/ARm", "/ARl"}: COCOeval's 12 box statistics (-1: nothing to measure, see the
        class docstring). With `workdir`, process 0 also writes
        `<workdir>/eval/<prefix>_step<N>.json`, `<workdir>/plots/pr_<prefix>.png` and
        `<workdir>/plots/detections_<prefix>.png` (when images were kept)."""
        dataset, detections = self.coco_datasets()
        stats, coco_eval = _coco_eval(dataset, detections)
        metrics = {f"{prefix}/{name}": float(v) for name, v in zip(STAT_NAMES, stats, strict=True)}
        self.precision = None if coco_eval is None else coco_eval.eval["precision"]
        self.per_class = self._per_class(dataset, detections, coco_eval)
        if workdir is not None and jax.process_index() == 0:
            self.write_reports(workdir, step, prefix, metrics)
        return metrics

    def _per_class(self, dataset: dict, detections: list, coco_eval) -> dict:
        """{name: {"AP", "AP50" (None without ground truth), "gt", "crowd", "detections"}}."""
        counts = {c: {"gt": 0, "crowd": 0, "detections": 0} for c in self.category_ids}
        for ann in dataset["annotations"]:
            if ann["category_id"] in counts:
                counts[ann["category_id"]]["crowd" if ann["iscrowd"] else "gt"] += 1
        for det in detections:
            counts[det["category_id"]]["detections"] += 1
        per_class = {}
        for k, c in enumerate(self.category_ids):
            ap = ap50 = None
            if coco_eval is not None:
                # [T IoUs, R recalls, K classes, A areas, M max dets]; area "all", 100 dets,
                # as COCOeval.summarize reads its AP; -1 where the class has no ground truth.
                precision = self.precision[:, :, k, 0, -1]
                if (precision > -1).any():
                    ap = float(precision[precision > -1].mean())
                    ap50 = float(precision[0][precision[0] > -1].mean())
            per_class[self.class_names[c]] = {"AP": ap, "AP50": ap50, **counts[c]}
        return per_class

    def write_reports(self, workdir: str, step: int, prefix: str, metrics: dict) -> None:
        """The statistics and per-class AP / counts to `<workdir>/eval/<prefix>_step<N>.json`,
        precision-recall curves at IoU 0.5 to `<workdir>/plots/pr_<prefix>.png` and the kept
        images with their detections (score >= DRAW_SCORE_THRESHOLD) over the ground truth
        (thin, dashed) to `<workdir>/plots/detections_<prefix>.png`."""
        os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
        record = {
            "step": step,
            **metrics,
            "images": len(self.images),
            "detections": sum(v["detections"] for v in self.per_class.values()),
            "per_class": self.per_class,
        }
        with open(os.path.join(workdir, "eval", f"{prefix}_step{step}.json"), "w") as f:
            json.dump(record, f)
        plots_dir = os.path.join(workdir, "plots")
        curves = None if self.precision is None else self.precision[0, :, :, 0, -1]
        plot_pr_curves(
            curves,
            [self.class_names[c] for c in self.category_ids],
            os.path.join(plots_dir, f"pr_{prefix}.png"),
            title=f"{prefix}, step {step}, IoU 0.5",
        )
        if self.pictures:
            from PIL import Image

            Image.fromarray(self.draw_pictures()).save(
                os.path.join(plots_dir, f"detections_{prefix}.png")
            )

    def draw_pictures(self, columns: int = 4) -> np.ndarray:
        """The kept images in a grid (uint8), each shrunk to DRAW_MAX_SIDE at most, with its
        ground truth (width 1, dashed) and detections scoring >= DRAW_SCORE_THRESHOLD."""
        from jaxvision.evaluation.draw import draw_detections, image_grid

        drawn = []
        for image_id, picture in self.pictures.items():
            image = self.images.get(image_id)
            factor = min(1.0, DRAW_MAX_SIDE / max(picture.shape[:2]))
            if factor < 1.0:
                from PIL import Image

                h, w = picture.shape[:2]
                size = (max(1, round(w * factor)), max(1, round(h * factor)))
                picture = np.asarray(Image.fromarray(picture).resize(size, Image.BILINEAR))
            if image is not None:
                picture = draw_detections(
                    picture,
                    image["gt_boxes"] * factor,
                    image["gt_classes"],
                    None,
                    self.class_names,
                    width=1,
                    dashed=True,
                    labels=False,
                )
                picture = draw_detections(
                    picture,
                    image["boxes"] * factor,
                    image["classes"],
                    image["scores"],
                    self.class_names,
                    score_threshold=DRAW_SCORE_THRESHOLD,
                )
            drawn.append(picture)
        return image_grid(drawn, columns)

    def table(self, metrics: dict) -> str:
        """A plain-text table: `metrics` in their order (-1 shown as n/a), then AP and AP50 of
        each class that has ground truth, with its counts of ground truth and detections."""
        lines = [f"{name:<24} {_number(value)}" for name, value in metrics.items()]
        lines.append(f"{'class':<24} {'AP':>7} {'AP50':>7} {'gt':>7} {'dets':>7}")
        for name, row in self.per_class.items():
            if row["AP"] is not None:
                lines.append(
                    f"{str(name)[:24]:<24} {row['AP']:7.4f} {row['AP50']:7.4f}"
                    f" {row['gt']:7d} {row['detections']:7d}"
                )
        return "\n".join(lines)


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _number(value: float) -> str:
    return "    n/a" if value == -1 else f"{value:.4f}"


def _coco_eval(dataset: dict, detections: list[dict]):
    """(COCOeval.stats [12], the COCOeval) of bbox detections against `dataset`; all -1 and
    None when there is no image (COCOeval cannot accumulate an empty evaluation)."""
    if not dataset["images"]:
        return np.full(len(STAT_NAMES), -1.0), None
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # pycocotools reports its progress on stdout, which our programs keep for results.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if detections:
            results = gt.loadRes([dict(d) for d in detections])  # loadRes adds fields in place
        else:  # loadRes reads its first entry to tell the kind of result
            results = COCO()
            results.dataset = {**dataset, "annotations": []}
            results.createIndex()
        coco_eval = COCOeval(gt, results, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return np.asarray(coco_eval.stats, np.float64), coco_eval


def plot_pr_curves(
    precision: np.ndarray | None, class_names: Sequence[str], path: str, title: str = ""
) -> None:
    """Writes precision against recall (COCO's 101 recall points) as a PNG: the mean over the
    classes with ground truth, and each class (named with its AP50 up to 20 classes).

    precision: [101, K] at one IoU threshold (COCOeval.eval["precision"][t, :, :, 0, -1]),
    a column of -1 for a class without ground truth (left out); None: no data.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recall = np.linspace(0.0, 1.0, 101)
    fig = Figure(figsize=(12, 5))
    mean_ax, class_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    columns = 0 if precision is None else precision.shape[1]
    present = [k for k in range(columns) if (precision[:, k] > -1).all()]
    if present:
        curves = precision[:, present]
        mean = curves.mean(axis=1)
        mean_ax.plot(recall, mean, linewidth=2, label=f"all classes (AP50 {mean.mean():.3f})")
        mean_ax.legend(fontsize=8, loc="lower left")
        for k in present:
            label = f"{class_names[k]} ({precision[:, k].mean():.3f})"
            class_ax.plot(recall, precision[:, k], linewidth=1, label=label)
        if len(present) <= 20:
            class_ax.legend(fontsize=7, loc="lower left")
    else:
        for ax in (mean_ax, class_ax):
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
    for ax, name in ((mean_ax, "all classes"), (class_ax, f"each class ({len(present)})")):
        ax.set_title(f"{title}: {name}" if title else name)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)


def _xyxy_offset(offset: np.ndarray) -> np.ndarray:
    """(top, left) -> [4] (left, top, left, top), what xyxy canvas boxes are shifted back by."""
    top, left = np.asarray(offset, np.float64).reshape(-1)[:2]
    return np.array([left, top, left, top])


def _xyxy_scale(scale: np.ndarray) -> np.ndarray:
    """(sy, sx) or one factor -> [4] (sx, sy, sx, sy), what divides xyxy boxes back to original
    pixels."""
    scale = np.asarray(scale, np.float64).reshape(-1)
    sy, sx = (scale[0], scale[0]) if scale.size == 1 else scale[:2]
    return np.array([sx, sy, sx, sy])
