"""YOLO detection (YOLOv8 / YOLO11 / YOLO26, jaxvision.models.detection.yolo) as a detection
task: anchor points instead of anchor boxes, the reference's task-aligned loss
(jaxvision.tasks.yolo_loss) and its two ways out, class-aware NMS over the one-to-many head or,
for end-to-end models, the one-to-one head's top detections with no NMS.

Batches are the detection batches of jaxvision.tasks.detection (classes 1..K-1; class c is the
head's score channel c - 1). Images go in as [0, 1] pixels (the reference's input: no mean or
std). The loss is the reference's per-image loss (its reported box + cls + dfl: the trainer's
total divided by the batch size), so the learning rate does not follow the batch size; its parts
are logged as train/box_loss, train/cls_loss and train/dfl_loss. An end-to-end model weighs its
two branches by the reference's epoch schedule (yolo_loss.end_to_end_weights), the epoch read
from the trained model's step.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.models import detection as detectors
from jaxvision.models.detection import yolo as yolo_models
from jaxvision.ops.anchors import anchor_points
from jaxvision.ops.boxes import clip_boxes
from jaxvision.ops.nms import select_detections
from jaxvision.tasks import yolo_loss
from jaxvision.tasks.classification import apply_model
from jaxvision.tasks.detection import Detection
from jaxvision.tasks.images import normalize


@dataclasses.dataclass(frozen=True)
class YOLOOptions:
    """Decoding, as the reference's predictor and validator.

    score_thresh: the smallest class score a detection keeps (the reference validates at
    0.001, predicts at 0.25). nms_thresh: class-aware NMS's IoU (0.7). candidates: the most
    (anchor, class) pairs, by score, that go into NMS (the reference's max_nms is 30,000; a
    fixed, smaller number keeps the shapes static and NMS cheap at a loss only when an image
    has more than this many boxes above the threshold). detections_per_img: the most
    detections per image (300). end_to_end: for a model with a one-to-one head (YOLO26), its
    top detections without NMS (True, the reference's default for such models) or NMS over the
    one-to-many head (False).
    """

    score_thresh: float = 0.001
    nms_thresh: float = 0.7
    candidates: int = 1000
    detections_per_img: int = 300
    end_to_end: bool = True


class YOLODetection(Detection):
    """The detection task for a YOLO model on an S x S canvas (S a multiple of 32).

    steps_per_epoch, epochs: what the end-to-end loss's schedule counts in (training only; an
    end-to-end model trained without them weighs its branches as at epoch 0).
    """

    Options = YOLOOptions

    def __init__(
        self,
        model: nn.Module,
        *,
        canvas: int,
        options: YOLOOptions | None = None,
        name: str = "model",
        steps_per_epoch: float | None = None,
        epochs: int | None = None,
    ):
        self.model, self.canvas, self.trained = model, canvas, name
        self.family = model.family
        self.options = options if options is not None else YOLOOptions()
        shapes = detectors.feature_shapes(model, canvas, canvas)
        strides = tuple(canvas // h for h, _ in shapes)
        points, point_strides = anchor_points(shapes, strides)
        self.points, self.point_strides = jnp.asarray(points), jnp.asarray(point_strides)
        # Pixel centres, one per position: what a caller that draws "anchors" sees.
        centres = points * point_strides[:, None]
        self.anchors = np.concatenate([centres, centres], axis=-1).astype(np.float32)
        self.anchors_per_level = tuple(h * w for h, w in shapes)
        self.loss_options = yolo_loss.YOLOLossOptions(
            reg_max=model.reg_max, strides=tuple(float(s) for s in strides)
        )
        self.end_to_end = bool(getattr(model, "end2end", False))
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.mean, self.std = (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)
        self.num_classes = model.num_classes
        self.head_paths = [("params", *path.split("/")) for path in model.class_outputs]
        self.head_paths += [("batch_stats", *path.split("/")) for path in model.class_outputs]

    def prepare(self, batch: dict, rng, models: dict):
        inputs = {
            "image": normalize(batch["image"], self.mean, self.std),
            "boxes": jnp.asarray(batch["boxes"], jnp.float32),
            "labels": batch["classes"] - 1,  # the head's channel of each class
            "boxes_mask": batch["boxes_mask"],
        }
        if self.end_to_end:
            step = models[self.trained].step
            per_epoch = self.steps_per_epoch or 1.0
            inputs["epoch"] = jnp.floor(step / per_epoch) if self.steps_per_epoch else 0.0
        return inputs, rng

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        variables = {"params": params, **mutable}
        outputs, new_mutable = apply_model(
            self.model, variables, inputs["image"], train=True, rng=rng
        )
        truth = (
            self.points,
            self.point_strides,
            inputs["labels"],
            inputs["boxes"],
            inputs["boxes_mask"],
            (self.canvas, self.canvas),
        )
        if self.end_to_end:
            one = outputs["one2one"]
            result = yolo_loss.end_to_end_loss(
                (outputs["boxes"], outputs["cls_logits"]),
                (one["boxes"], one["cls_logits"]),
                *truth,
                inputs["epoch"],
                self.epochs or 1,
                self.loss_options,
            )
        else:
            result = yolo_loss.detection_loss(
                outputs["boxes"], outputs["cls_logits"], *truth, self.loss_options
            )
        batch = inputs["image"].shape[0]
        parts = {"box_loss": result.box, "cls_loss": result.cls, "dfl_loss": result.dfl}
        return result.total / batch, (parts, new_mutable)

    def head_outputs(self, models: dict, images, sizes=None) -> dict:
        """The model's raw outputs in eval mode; images: [B, S, S, 3] uint8 canvases."""
        variables = models[self.trained].variables
        x = normalize(images, self.mean, self.std)
        return apply_model(self.model, variables, x, train=False)[0]

    def predict(self, models: dict, images, sizes=None) -> dict:
        """images: [B, S, S, 3] uint8 canvases -> {"boxes": [B, D, 4] canvas pixels (clipped
        to the canvas), "scores", "classes" (1..K-1), "valid"}, D = detections_per_img, valid
        rows first by descending score. `sizes` is not used: a letterboxed image is centred,
        and the evaluator and the Predictor map boxes back with its offset."""
        outputs = self.head_outputs(models, images)
        options = self.options
        canvas = jnp.asarray([self.canvas, self.canvas])
        if self.end_to_end and options.end_to_end:
            top = yolo_end_to_end(outputs, self.points, self.point_strides, options)
            return top | {"boxes": clip_boxes(top["boxes"], canvas)}
        boxes = yolo_models.decode_boxes(outputs["boxes"], self.points, self.point_strides)
        scores = jax.nn.sigmoid(outputs["cls_logits"].astype(jnp.float32))

        def image(boxes, scores):
            num = scores.shape[-1]
            k = min(options.candidates, scores.size)
            top_scores, top = jax.lax.top_k(scores.reshape(-1), k)
            picked = clip_boxes(boxes[top // num], canvas)
            found = select_detections(
                picked,
                top_scores,
                (top % num).astype(jnp.int32),
                top_scores > options.score_thresh,
                options.nms_thresh,
                options.detections_per_img,
            )
            return found | {"classes": jnp.where(found["valid"], found["classes"] + 1, 0)}

        return jax.vmap(image)(boxes.astype(jnp.float32), scores)


def yolo_end_to_end(outputs: dict, points, point_strides, options: YOLOOptions) -> dict:
    """The one-to-one head's detections (the reference's (B, 300, 6) end-to-end output) as
    {"boxes", "scores", "classes" (1..K-1), "valid" (score > score_thresh)}, D =
    detections_per_img rows, best first."""
    top = yolo_models.end_to_end_top(
        outputs, points, point_strides, max_det=options.detections_per_img
    )
    valid = top[..., 4] > options.score_thresh
    return {
        "boxes": jnp.where(valid[..., None], top[..., :4], 0),
        "scores": jnp.where(valid, top[..., 4], 0),
        "classes": jnp.where(valid, top[..., 5].astype(jnp.int32) + 1, 0),
        "valid": valid,
    }
