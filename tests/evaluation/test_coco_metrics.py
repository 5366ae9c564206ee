"""The COCO detection evaluator against pycocotools run the standard way on JSON files, on a small
hand-made set: crowd ground truth, an image without ground truth, a class without ground truth,
padding rows, invalid detection rows, scales other than 1."""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import multihost_utils
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxvision.errors import UserError
from jaxvision.evaluation import coco

NAMES = ["__background__", "cat", "N/A", "dog", "car", "bus"]  # categories 1, 3, 4, 5
CANVAS, M, D = 96, 4, 6

# Original pixels; a canvas is the image times `scale`. Every coordinate is a multiple of 1/4 so
# that scaling to the canvas and back is exact in float32.
EXAMPLES = [
    {
        "image_id": 11,
        "scale": 0.5,
        "gt": [  # box, class, iscrowd, area (the annotation's, not the box's)
            ([10, 20, 110, 140], 1, 0, 12000.0),
            ([200, 50, 300, 200], 3, 0, 15000.0),
            ([0, 0, 400, 300], 3, 1, 60000.0),
        ],
        "dets": [  # box, class, score
            ([12, 22, 108, 142], 1, 0.9),
            ([205, 60, 300, 190], 3, 0.8),
            ([20, 20, 120, 90], 3, 0.6),  # inside the crowd region: ignored, not a false positive
            ([420, 320, 500, 400], 1, 0.5),
            ([10, 20, 110, 140], 4, 0.3),
        ],
    },
    {
        "image_id": 12,
        "scale": 2.0,
        "gt": [
            ([5, 5, 45, 30], 4, 0, 1000.0),  # small
            ([50, 60, 250, 260], 4, 0, 40000.0),  # large
            ([100, 10, 160, 70], 1, 0, 3600.0),  # medium
        ],
        "dets": [
            ([6, 4, 44, 31], 4, 0.95),
            ([60, 70, 240, 250], 4, 0.7),
            ([100, 10, 160, 70], 1, 0.2),
            ([110, 20, 170, 80], 1, 0.85),
            ([300, 300, 340, 340], 5, 0.65),  # bus: a class with no ground truth
        ],
    },
    {
        "image_id": 13,
        "scale": 1.0,
        "gt": [],  # an image without ground truth
        "dets": [
            ([10, 10, 60, 60], 3, 0.75),
            ([30, 30, 90, 90], 4, 0.55),
            ([5, 5, 25, 25], 2, 0.5),  # "N/A": not a category, pycocotools ignores it too
        ],
    },
    {
        "image_id": 14,
        "scale": (0.75, 0.5),  # (sy, sx): a resize that does not keep the aspect (SSD's)
        "gt": [([0, 0, 100, 100], 3, 0, 5000.0), ([300, 100, 380, 180], 1, 0, 6400.0)],
        "dets": [([20, 0, 120, 100], 3, 0.5), ([300, 100, 380, 180], 4, 0.45)],
    },
    {
        "image_id": 15,
        "scale": 1.0,
        "gt": [([0, 0, 50, 50], 1, 1, 2500.0), ([60, 60, 120, 140], 3, 0, 4800.0)],
        "dets": [],
    },
]


def _row(example):
    """One image's eval-step outputs, padded, with garbage in the rows that do not count."""
    # The transforms' (sy, sx); boxes scale by (sx, sy, sx, sy).
    sy, sx = np.broadcast_to(np.float32(example["scale"]), (2,))
    s = np.float32([sx, sy, sx, sy])
    row = {
        "boxes": np.tile(np.float32([0, 0, 50, 50]), (D, 1)),
        "scores": np.full(D, 0.99, np.float32),  # invalid rows outscore every real one
        "classes": np.ones(D, np.int32),
        "valid": np.zeros(D, bool),
        "gt_boxes": np.tile(np.float32([0, 0, 10, 10]), (M, 1)),
        "gt_classes": np.ones(M, np.int32),
        "gt_mask": np.zeros(M, bool),
        "gt_iscrowd": np.zeros(M, np.int32),
        "gt_area": np.full(M, 100.0, np.float32),
        "image_id": np.int32(example["image_id"]),
        "scale": np.float32([sy, sx]),
        "mask": np.bool_(True),
    }
    for j, (box, c, crowd, area) in enumerate(example["gt"]):
        row["gt_boxes"][j] = np.float32(box) * s
        row["gt_classes"][j], row["gt_iscrowd"][j], row["gt_area"][j] = c, crowd, area
        row["gt_mask"][j] = True
    for j, (box, c, score) in enumerate(example["dets"]):
        row["boxes"][j] = np.float32(box) * s
        row["classes"][j], row["scores"][j], row["valid"][j] = c, score, True
    return row


def _batches(examples, batch_size=3):
    """(outputs, host batch) per eval batch; the last one padded with a row whose mask is False
    (and whose ground truth and detections would change every number if they counted)."""
    rows = [_row(e) for e in examples]
    padding = _row({**EXAMPLES[0], "image_id": 99}) | {"mask": np.bool_(False)}
    rows += [padding] * (-len(rows) % batch_size)
    batches = []
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        outputs = {k: np.stack([r[k] for r in part]) for k in part[0]}
        images = np.random.default_rng(start).integers(0, 255, (len(part), CANVAS, CANVAS, 3))
        batch = {
            "image": images.astype(np.uint8),
            "image_id": outputs["image_id"],
            "mask": outputs["mask"],
            "size": np.full((len(part), 2), [80, 64], np.int32),
        }
        batches.append((outputs, batch))
    return batches


def _evaluate(examples, names=NAMES, **kwargs):
    evaluator = coco.CocoEvaluator(names)
    for index, (outputs, batch) in enumerate(_batches(examples)):
        if index == 0:  # the eval step's jax arrays as well as numpy
            outputs = jax.tree.map(jnp.asarray, outputs)
        evaluator.add(outputs, batch)
    return evaluator, evaluator.result("eval", **kwargs)


def _reference(tmp_path, examples, cat_ids=None):
    """COCOeval.stats the standard way: JSON files, COCO(file).loadRes(file), summarize()."""
    images, annotations, dets = [], [], []
    for e in examples:
        images.append({"id": e["image_id"], "width": 640, "height": 480})
        for (x1, y1, x2, y2), c, crowd, area in e["gt"]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": e["image_id"],
                    "category_id": c,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": area,
                    "iscrowd": crowd,
                }
            )
        for (x1, y1, x2, y2), c, score in e["dets"]:
            bbox = [x1, y1, x2 - x1, y2 - y1]
            dets.append({"image_id": e["image_id"], "category_id": c, "bbox": bbox, "score": score})
    categories = [{"id": c, "name": NAMES[c]} for c in (1, 3, 4, 5)]
    gt_file, dets_file = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    dets_file.write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        coco_eval = COCOeval(gt, gt.loadRes(str(dets_file)), "bbox")
        if cat_ids is not None:
            coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_stats_equal_pycocotools_on_json_files(tmp_path):
    evaluator, metrics = _evaluate(EXAMPLES)
    assert list(metrics) == [f"eval/{name}" for name in coco.STAT_NAMES]
    reference = _reference(tmp_path, EXAMPLES)
    np.testing.assert_allclose(list(metrics.values()), reference, rtol=1e-12, atol=1e-12)
    # Neither trivial nor degenerate: partly right, every size present.
    assert 0.2 < metrics["eval/AP"] < 0.8 and 0.0 < metrics["eval/APs"] < 1.0
    assert min(metrics.values()) >= 0.0
    dataset, detections = evaluator.coco_datasets()  # in original pixels, as the JSON files
    assert dataset["annotations"][3]["bbox"] == [5.0, 5.0, 40.0, 25.0]
    assert dataset["annotations"][3]["area"] == 1000.0 and dataset["annotations"][2]["iscrowd"]
    assert detections[5] == {"image_id": 12, "category_id": 4, "bbox": [6.0, 4.0, 38.0, 27.0]} | {
        "score": pytest.approx(0.95)
    }
    # The padding row (id 99) and the invalid detection rows count nowhere.
    assert sorted(evaluator.images) == [11, 12, 13, 14, 15]
    assert sum(len(image["boxes"]) for image in evaluator.images.values()) == 15
    assert not any(
        (image["scores"] == np.float32(0.99)).any() for image in evaluator.images.values()
    )


def test_per_class_ap_equals_cocoeval_on_one_category(tmp_path):
    evaluator, _ = _evaluate(EXAMPLES)
    for c in (1, 3, 4):
        reference = _reference(tmp_path, EXAMPLES, cat_ids=[c])
        row = evaluator.per_class[NAMES[c]]
        assert row["AP"] == pytest.approx(reference[0], abs=1e-12)
        assert row["AP50"] == pytest.approx(reference[1], abs=1e-12)
    assert evaluator.per_class["cat"] | {"AP": 0, "AP50": 0} == {
        "AP": 0,
        "AP50": 0,
        "gt": 3,
        "crowd": 1,
        "detections": 4,
    }
    # bus: only a false positive, no ground truth: no AP (pycocotools' -1), still counted.
    assert evaluator.per_class["bus"] == {
        "AP": None,
        "AP50": None,
        "gt": 0,
        "crowd": 0,
        "detections": 1,
    }
    assert "N/A" not in evaluator.per_class and "__background__" not in evaluator.per_class


def _one_box(dx):
    return {
        "image_id": 1,
        "scale": 1.0,
        "gt": [([0, 0, 100, 100], 1, 0, 10000.0)],  # large (area > 96²)
        "dets": [([dx, 0, 100 + dx, 100], 1, 0.9)],
    }


def test_perfect_and_shifted_detector():
    _, perfect = _evaluate([_one_box(0)])
    for name in ("AP", "AP50", "AP75", "APl", "AR1", "AR10", "AR100", "ARl"):
        assert perfect[f"eval/{name}"] == pytest.approx(1.0, abs=1e-12)
    for name in ("APs", "APm", "ARs", "ARm"):  # no small or medium ground truth
        assert perfect[f"eval/{name}"] == -1.0
    # Shifted by 20 px: IoU 8000 / 12000 = 0.667, a match at IoU 0.50 .. 0.65, 4 of the 10.
    _, shifted = _evaluate([_one_box(20)])
    expected = {"AP": 0.4, "AP50": 1.0, "AP75": 0.0, "APl": 0.4, "AR1": 0.4, "AR100": 0.4}
    for name, value in expected.items():
        assert shifted[f"eval/{name}"] == pytest.approx(value, abs=1e-12)


def test_empty_cases(tmp_path):
    # No detections at all: 0 where there is ground truth, -1 where there is none.
    _, metrics = _evaluate([{**e, "dets": []} for e in EXAMPLES])
    assert all(v == 0.0 for v in metrics.values())
    # Detections but no ground truth anywhere, or no image at all: nothing to measure.
    evaluator, metrics = _evaluate([EXAMPLES[2]])
    assert all(v == -1.0 for v in metrics.values())
    assert all(row["AP"] is None for row in evaluator.per_class.values())
    assert "dog" not in evaluator.table(metrics) and "n/a" in evaluator.table(metrics)
    empty = coco.CocoEvaluator(NAMES)
    outputs, batch = _batches([EXAMPLES[0]])[0]
    empty.add(outputs | {"mask": np.zeros(3, bool)}, batch | {"mask": np.zeros(3, bool)})
    metrics = empty.result("eval", workdir=str(tmp_path))
    assert metrics == {f"eval/{name}": -1.0 for name in coco.STAT_NAMES}
    assert (tmp_path / "plots" / "pr_eval.png").exists()
    assert not (tmp_path / "plots" / "detections_eval.png").exists()  # no image kept


def test_reports_and_pictures_written_and_stdout_clean(tmp_path, capsys):
    evaluator, metrics = _evaluate(EXAMPLES, workdir=str(tmp_path), step=7)
    table = evaluator.table(metrics)
    assert capsys.readouterr().out == ""
    report = json.loads((tmp_path / "eval" / "eval_step7.json").read_text())
    assert report["step"] == 7 and report["eval/AP"] == metrics["eval/AP"]
    assert report["images"] == 5 and report["detections"] == 14  # the "N/A" one left out
    assert report["per_class"] == evaluator.per_class
    assert Image.open(tmp_path / "plots" / "pr_eval.png").format == "PNG"
    grid = np.asarray(Image.open(tmp_path / "plots" / "detections_eval.png"))
    # Five 80 x 64 images (the canvas's `size`), four to a row, 4 px apart.
    assert grid.shape == (2 * 80 + 4, 4 * 64 + 3 * 4, 3)
    lines = table.splitlines()
    assert lines[0].split() == ["eval/AP", f"{metrics['eval/AP']:.4f}"]
    assert [line.split()[0] for line in lines[13:]] == ["cat", "dog", "car"]  # not bus


def test_gathers_every_process(tmp_path, monkeypatch):
    """With two processes, each one's outputs are gathered: process 0 scores every image."""
    batches = _batches(EXAMPLES, batch_size=4)
    halves = [({k: v[2:] for k, v in outputs.items()}) for outputs, _ in batches]
    gathered = iter(halves)

    def allgather(tree, tiled):
        assert tiled
        other = next(gathered)
        return {k: np.concatenate([np.asarray(v), other[k]]) for k, v in tree.items()}

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    evaluator = coco.CocoEvaluator(NAMES)
    for outputs, batch in batches:  # process 0's half of each batch and of its host batch
        evaluator.add({k: v[:2] for k, v in outputs.items()}, {k: v[:2] for k, v in batch.items()})
    metrics = evaluator.result("eval")
    np.testing.assert_allclose(list(metrics.values()), _reference(tmp_path, EXAMPLES), atol=1e-12)
    assert sorted(evaluator.pictures) == [11, 12, 15]  # process 0's own real rows


def test_a_repeated_image_id_is_a_user_error():
    evaluator = coco.CocoEvaluator(NAMES)
    outputs, _ = _batches(EXAMPLES[:1])[0]
    evaluator.add(outputs)
    with pytest.raises(UserError, match="image id 11 occurs twice"):
        evaluator.add(outputs)
