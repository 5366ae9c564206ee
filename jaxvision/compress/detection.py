"""int8 post-training quantization of a detector (RetinaNet / SSD): the task that runs a
quantized detector's storage form, and how far its detections are from the float model's.

The quantization itself is `jaxvision.compress.quantize.Scheme`'s, unchanged: every conv of the
body, the FPN or the extras and the heads has int8 kernels with per-output-channel scales;
biases, norms (BatchNorm statistics, GroupNorm, SSD's L2 scale) stay float32. The anchors and
the post-processing (box decoding, NMS) are the float task's.
"""

import jax
import numpy as np

from jaxvision import data
from jaxvision.compress.quantize import Scheme
from jaxvision.predictor import Predictor, eval_transform
from jaxvision.state import ModelState
from jaxvision.tasks.detection import Detection
from jaxvision.tasks.images import normalize


class QuantizedDetection(Detection):
    """Detection whose model variables are a quantized detector's storage form: each forward
    restores them (int8 -> the scheme's applied tree) inside the jitted program, so the int8
    values are what is held, exported and served. Anchors, options and post-processing are
    `task`'s (built on the float model)."""

    def __init__(self, task: Detection, scheme: Scheme):
        super().__init__(task.model, canvas=task.canvas, options=task.options, name=task.trained)
        self.scheme = scheme

    def head_outputs(self, models: dict, images, sizes=None) -> dict:
        """The quantized detector's raw outputs in eval mode; images: [B, S, S, 3] uint8;
        sizes: [B, 2] (h, w) in the canvas, what a two-stage detector clips proposals to."""
        variables = self.scheme.restore(models[self.trained].variables)
        x = normalize(images, self.mean, self.std)
        return self.how.forward(self.scheme.applied, variables, x, sizes)

    def loss(self, *args, **kwargs):
        raise NotImplementedError("a quantized detector is for inference: train the float one")


def split_evaluation(predictor: Predictor, source, batch_size: int) -> tuple[dict, list[dict]]:
    """({COCO stat name: value} (the 12 of jaxvision.evaluation.coco), every image's valid
    detections in canvas pixels [{"boxes": [D, 4] xyxy, "scores": [D], "classes": [D]}]) of
    `predictor` on `source`, preprocessed and scored as its run evaluated (the task's
    eval_outputs and evaluator), in one pass."""
    task = predictor.task

    @jax.jit
    def outputs(variables, batch):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return task.eval_outputs({task.trained: model}, batch)

    evaluator = task.evaluator(predictor.class_names)
    found = []
    transform = eval_transform(predictor.record)
    for batch in data.eval_batches(source, transform, global_batch_size=batch_size):
        out = jax.device_get(outputs(predictor.variables, batch))
        evaluator.add(out, batch)
        for i in np.flatnonzero(np.asarray(batch["mask"])):
            keep = np.asarray(out["valid"][i], bool)
            found.append({k: np.asarray(out[k][i])[keep] for k in ("boxes", "scores", "classes")})
    metrics = evaluator.result("eval")
    return {k.split("/", 1)[1]: v for k, v in metrics.items()}, found


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] x [M, 4] xyxy boxes -> [N, M] IoU (0 where the union is empty)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(ref: dict, other: dict, iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, most confident reference first: (ref index, other index)
    of the same class with IoU >= `iou`."""
    if not len(ref["boxes"]) or not len(other["boxes"]):
        return []
    ious = _iou(ref["boxes"], other["boxes"])
    ious[ref["classes"][:, None] != other["classes"][None, :]] = -1.0
    pairs, taken = [], np.zeros(len(other["boxes"]), bool)
    for r in np.argsort(-ref["scores"], kind="stable"):
        row = np.where(taken, -1.0, ious[r])
        j = int(np.argmax(row))
        if row[j] >= iou:
            taken[j] = True
            pairs.append((int(r), j))
    return pairs


def agreement(
    reference: list[dict], other: list[dict], *, iou: float = 0.9, min_score: float = 0.3
) -> dict:
    """How closely `other`'s detections (per image, `split_evaluation`) follow `reference`'s.

    Among the reference detections scoring >= min_score (what jaxvision evaluate draws):
    `matched`, the share with a detection of `other` of the same class at IoU >= `iou`
    (one-to-one, any score); over those pairs the largest |score difference| and box
    coordinate difference (pixels). `other_unmatched`: the share of `other`'s detections
    scoring >= min_score that match no reference detection (of any score) the same way."""
    count, hits, spurious, other_count = 0, 0, 0, 0
    max_score, max_box = 0.0, 0.0
    for ref, oth in zip(reference, other, strict=True):
        confident = {k: v[ref["scores"] >= min_score] for k, v in ref.items()}
        count += len(confident["scores"])
        for r, j in _match(confident, oth, iou):
            hits += 1
            max_score = max(max_score, abs(float(confident["scores"][r] - oth["scores"][j])))
            max_box = max(max_box, float(np.abs(confident["boxes"][r] - oth["boxes"][j]).max()))
        strong = {k: v[oth["scores"] >= min_score] for k, v in oth.items()}
        other_count += len(strong["scores"])
        spurious += len(strong["scores"]) - len(_match(strong, ref, iou))
    return {
        "iou": iou,
        "min_score": min_score,
        "detections": count,
        "matched": hits / count if count else 1.0,
        "other_unmatched": spurious / other_count if other_count else 0.0,
        "max_score_diff": max_score,
        "max_box_diff_px": max_box,
    }
