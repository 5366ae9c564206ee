"""Object detection: one-stage detectors (RetinaNet: focal loss over anchors; FCOS: points;
SSD: hard negative mining over default boxes) and two-stage Faster R-CNN (an RPN's proposals,
then a box head on sampled RoIs), trained on padded boxes; COCO metrics in evaluation.

Batches (jaxvision.data.detection_transforms): {"image": [B, S, S, 3] uint8 canvas, "boxes":
[B, M, 4] xyxy canvas pixels, "boxes_mask": [B, M], "classes": [B, M] int32 (1..K-1), "size":
[B, 2] (h, w) of the image inside the canvas, "scale": [B, 2] (sy, sx) canvas pixels per
original pixel, "image_id": [B]; in evaluation also "iscrowd", "area" [B, M] and "mask" [B]}.
The anchors are fixed by the canvas, so they are computed once, on the host, when the task is
built; the model family's math (jaxvision.tasks.retinanet_loss / fcos_loss /
ssd_loss / fasterrcnn_loss) turns the model's outputs into the loss and into detections.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.errors import UserError
from jaxvision.evaluation.coco import CocoEvaluator
from jaxvision.models import detection as detectors
from jaxvision.ops import anchors as anchor_ops
from jaxvision.registry import Registry
from jaxvision.tasks import fasterrcnn_loss, fcos_loss, retinanet_loss, ssd_loss
from jaxvision.tasks.classification import apply_model
from jaxvision.tasks.images import image_model_init, normalize
from jaxvision.tasks.kinds import TaskKind, model_options


class OneStage:
    """How a one-stage family over default boxes (SSD) meets the Detection task: its math module
    (`loss`, `postprocess`, as jaxvision.tasks.ssd_loss has them) and its options dataclass.
    The subclasses below say what other families do differently; a new family is an instance
    registered in FAMILIES (or, bringing its own anchors, loss and decoding, a task class in
    FAMILY_TASKS)."""

    def __init__(self, math, options: type):
        self.math, self.Options = math, options

    def anchors(self, model: nn.Module, shape: tuple[int, int]) -> tuple[np.ndarray, tuple]:
        """(anchors float32 [A, 4] xyxy pixels, anchors per pyramid level) of `model` on an
        input of `shape` (h, w), as torchvision's DefaultBoxGenerator places them."""
        shapes = detectors.feature_shapes(model, *shape)
        anchors = anchor_ops.default_boxes(
            shape, shapes, model.aspect_ratios, scales=model.scales, steps=model.steps,
            clip=model.clip,
        )  # fmt: skip
        per_level = tuple(h * w * n for (h, w), n in zip(shapes, model.num_anchors(), strict=True))
        return anchors, per_level

    def inputs(self, batch: dict) -> dict:
        """What the loss needs from a batch besides the image and its boxes."""
        return {}

    def loss(self, task, variables: dict, inputs: dict, rng):
        """((loss, its parts), the new mutable collections) of `task`'s model on `inputs`."""
        outputs, mutable = apply_model(task.model, variables, inputs["image"], train=True, rng=rng)
        args = (outputs, task.anchors, inputs["boxes"], inputs["classes"], inputs["boxes_mask"])
        levels = self._levels(task.anchors_per_level)
        return self.math.loss(*args, task.options, **levels), mutable

    def _levels(self, per_level) -> dict:
        return {}

    def forward(self, module: nn.Module, variables: dict, x, sizes) -> dict:
        """The raw outputs of `module` (the detector, or a stand-in such as its quantized
        form) in eval mode on normalised images x; sizes: [B, 2] (h, w) inside the canvas."""
        return apply_model(module, variables, x, train=False)[0]

    def postprocess(self, outputs: dict, anchors, per_level, sizes, options) -> dict:
        """Detections {"boxes", "scores", "classes", "valid"} from the raw outputs."""
        return self.math.postprocess(outputs, anchors, sizes, options)


class Levelled(OneStage):
    """RetinaNet and FCOS: anchors on anchor_grid's levels (FCOS: one square box per point), and
    math that takes the anchors per level (RetinaNet's ATSS matcher picks candidates level by
    level; FCOS has its scale ranges)."""

    def anchors(self, model: nn.Module, shape: tuple[int, int]) -> tuple[np.ndarray, tuple]:
        shapes = detectors.feature_shapes(model, *shape)
        sizes, ratios = model.anchor_sizes(), model.anchor_aspect_ratios()
        anchors = anchor_ops.anchor_grid(shape, shapes, sizes, ratios)
        return anchors, anchor_ops.anchors_per_level(shapes, sizes, ratios)

    def _levels(self, per_level) -> dict:
        return {"anchors_per_level": per_level}

    def postprocess(self, outputs: dict, anchors, per_level, sizes, options) -> dict:
        return self.math.postprocess(outputs, anchors, per_level, sizes, options)


class TwoStage(Levelled):
    """Faster R-CNN: the model proposes regions and pools RoIs itself; it needs the image sizes
    (proposals are clipped to each image) and, in training, the ground truth to sample RoIs
    from."""

    def inputs(self, batch: dict) -> dict:
        return {"size": batch["size"]}

    def loss(self, task, variables: dict, inputs: dict, rng):
        """The model samples its RoIs from its proposals and the ground truth (one key), the
        RPN's loss samples anchors (another)."""
        rpn_key, roi_key, dropout = jax.random.split(rng, 3)
        sample = functools.partial(
            self.math.sample_rois,
            boxes=jnp.asarray(inputs["boxes"], jnp.float32),
            classes=inputs["classes"],
            boxes_mask=inputs["boxes_mask"],
            key=roi_key,
            options=task.options,
        )
        mutable = [k for k in variables if k != "params"]
        outputs, new_mutable = task.model.apply(
            variables,
            inputs["image"],
            train=True,
            image_sizes=inputs["size"],
            sample_rois=sample,
            mutable=mutable,
            rngs={"dropout": dropout},
        )
        loss, parts = self.math.loss(
            outputs, task.anchors, inputs["boxes"], inputs["boxes_mask"], rpn_key, task.options
        )
        return (loss, parts), dict(new_mutable)

    def forward(self, module: nn.Module, variables: dict, x, sizes) -> dict:
        return module.apply(variables, x, train=False, image_sizes=sizes)

    def postprocess(self, outputs: dict, anchors, per_level, sizes, options) -> dict:
        return self.math.postprocess(outputs, sizes, options)


# family -> how its task differs (OneStage or a subclass), for the families Detection serves.
FAMILIES = Registry("detection family")
FAMILIES.register("retinanet", Levelled(retinanet_loss, retinanet_loss.RetinaNetOptions))
FAMILIES.register("fcos", Levelled(fcos_loss, fcos_loss.FCOSOptions))
FAMILIES.register("ssd", OneStage(ssd_loss, ssd_loss.SSDOptions))
FAMILIES.register("fasterrcnn", TwoStage(fasterrcnn_loss, fasterrcnn_loss.FasterRCNNOptions))
# family -> the task class of a family that brings its own anchors, loss and decoding (a
# subclass of Detection with an `Options` dataclass), imported on first use. A new family
# registers here: FAMILY_TASKS.register("name", cls).
FAMILY_TASKS = Registry("detection family task")
FAMILY_TASKS.declare("yolo", "jaxvision.tasks.yolo:YOLODetection")


def family_options(family: str, **overrides):
    """The family's post-processing and matching options (torchvision's defaults) with
    `overrides` (e.g. score_thresh, detections_per_img)."""
    cls = _options_class(family)
    known = [f.name for f in dataclasses.fields(cls)]
    classes = [how.Options for how in FAMILIES.values()]
    classes += [_options_class(f) for f in FAMILY_TASKS]
    anywhere = {f.name for c in classes for f in dataclasses.fields(c)}
    unknown = sorted(set(overrides) - anywhere)
    if unknown:
        raise UserError(
            f"--config.detection.{unknown[0]}: {family} has no option '{unknown[0]}'; its "
            f"options are {', '.join(known)}"
        )
    # Another family's options (a config written for RetinaNet run with an SSD): said, dropped.
    foreign = sorted(set(overrides) - set(known))
    if foreign:
        from jaxvision.train import reporting

        reporting.note(f"{family} has no option {', '.join(foreign)}: ignored")
    return cls(**{k: v for k, v in overrides.items() if k in known})


def _options_class(family: str) -> type:
    if family in FAMILY_TASKS:
        return FAMILY_TASKS[family].Options
    return FAMILIES[family].Options


def detection_task(model: nn.Module, *, canvas: int, options=None, name: str = "model", **kw):
    """The detection task of `model`'s family on an S x S canvas: its FAMILY_TASKS class, or
    Detection. `kw`: what that class takes besides (a YOLO task's steps_per_epoch, epochs)."""
    if model.family in FAMILY_TASKS:
        return FAMILY_TASKS[model.family](model, canvas=canvas, options=options, name=name, **kw)
    return Detection(model, canvas=canvas, options=options, name=name)


def model_anchors(model: nn.Module, canvas: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(anchors float32 [A, 4] xyxy canvas pixels, anchors per pyramid level) of `model` on an
    S x S canvas, as torchvision's AnchorGenerator / DefaultBoxGenerator place them."""
    return FAMILIES[model.family].anchors(model, (canvas, canvas))


class Detection:
    """The detection task for `model` (a jaxvision.models.detection detector) on an S x S canvas;
    what its family does differently (anchors, loss, forward, decoding) is FAMILIES[family]'s.

    Images are normalised on the device with the model's own statistics (torchvision's detectors
    each have theirs: SSD300 subtracts the mean only), so imported weights see what they were
    trained on.
    """

    kind = "detection"

    def __init__(self, model: nn.Module, *, canvas: int, options=None, name: str = "model"):
        self.model, self.canvas, self.trained = model, canvas, name
        self.family = model.family
        self.how = FAMILIES[self.family]
        self.math = self.how.math
        self.options = options if options is not None else family_options(self.family)
        self.anchors, self.anchors_per_level = model_anchors(model, canvas)
        self.mean = tuple(255.0 * v for v in model.image_mean)
        self.std = tuple(255.0 * v for v in model.image_std)
        self.num_classes = model.num_classes
        # What a new head replaces (init_from with other classes): the class outputs.
        self.head_paths = [("params", *path.split("/")) for path in model.class_outputs]

    def init_variables(self, batch: dict):
        """`rng -> variables` of the detector, from an example batch's canvas."""
        return image_model_init(self.model, batch["image"])

    def prepare(self, batch: dict, rng, models: dict):
        inputs = {
            "image": normalize(batch["image"], self.mean, self.std),
            "boxes": batch["boxes"],
            "classes": batch["classes"],
            "boxes_mask": batch["boxes_mask"],
            **self.how.inputs(batch),
        }
        return inputs, rng

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        variables = {"params": params, **mutable}
        (loss, parts), new_mutable = self.how.loss(self, variables, inputs, rng)
        return loss, (parts, new_mutable)

    def head_outputs(self, models: dict, images, sizes=None) -> dict:
        """The detector's raw outputs in eval mode; images: [B, S, S, 3] uint8 canvases."""
        variables = models[self.trained].variables
        x = normalize(images, self.mean, self.std)
        return self.how.forward(self.model, variables, x, sizes)

    def predict(self, models: dict, images, sizes=None) -> dict:
        """images: [B, S, S, 3] uint8 canvases; sizes: [B, 2] (h, w) of each image inside its
        canvas (None: the whole canvas) -> {"boxes": [B, D, 4] canvas pixels, "scores",
        "classes", "valid"} (jaxvision.tasks.retinanet_loss.postprocess)."""
        if sizes is None:
            sizes = jnp.full((images.shape[0], 2), self.canvas, jnp.int32)
        outputs = self.head_outputs(models, images, sizes)
        return self.how.postprocess(
            outputs, self.anchors, self.anchors_per_level, sizes, self.options
        )

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        """The batch's detections plus its ground truth, for the host-side COCO evaluator."""
        detections = self.predict(models, batch["image"], batch["size"])
        # A centred letterbox (YOLO's) says where each image starts on its canvas.
        placed = {"offset": batch["offset"]} if "offset" in batch else {}
        return (
            detections
            | placed
            | {
                "gt_boxes": batch["boxes"],
                "gt_classes": batch["classes"],
                "gt_mask": batch["boxes_mask"],
                "gt_iscrowd": batch["iscrowd"],
                "gt_area": batch["area"],
                "image_id": batch["image_id"],
                "scale": batch["scale"],
                "mask": batch["mask"],
            }
        )

    def evaluator(self, class_names: Sequence[str]) -> CocoEvaluator:
        return CocoEvaluator(class_names)


class DetectionKind(TaskKind):
    """Detection at inference: the record's "model" (jaxvision.models.detection) with its
    family's "options"; images resized into the "image_size" canvas ("min_size"/"max_size"
    as in training); boxes mapped back to each image's own pixels; answers: the valid
    detections with class names."""

    def build(self, record: dict) -> Detection:
        model = detectors.build(record["model"], **model_options(record))
        options = family_options(model.family, **record.get("options", {}))
        return detection_task(model, canvas=record["image_size"], options=options)

    def eval_transform(self, record: dict):
        if record.get("letterbox"):
            from jaxvision.data.yolo_transforms import YOLOEvalTransform

            return YOLOEvalTransform(record["image_size"], record.get("max_boxes") or 100)
        from jaxvision.data.detection_transforms import DetectionEvalTransform

        return DetectionEvalTransform(
            record["image_size"],
            record.get("min_size") or None,
            record.get("max_size") or None,
            record.get("max_boxes") or 100,
        )

    def preprocess(self, record: dict, images: Sequence[np.ndarray]) -> tuple[dict, object]:
        """{"images": [N, S, S, 3] canvases, "sizes": [N, 2]} and what maps the boxes back to
        each image's pixels: the scales [N, 2] (sy, sx), and for a "letterbox" record (YOLO's
        centred letterbox) {"scales", "offsets" [N, 2] (top, left), "shapes" [N, 2] (H, W)}."""
        if record.get("letterbox"):
            from jaxvision.data.yolo_augment import letterbox

            no_boxes = np.zeros((0, 4), np.float32)
            placed = [letterbox(image, no_boxes, record["image_size"]) for image in images]
            inputs = {
                "images": np.stack([p[0] for p in placed]),
                "sizes": np.stack([p[3] for p in placed]).astype(np.int32),
            }
            return inputs, {
                "scales": np.stack([p[2] for p in placed]),
                "offsets": np.stack([p[4] for p in placed]),
                "shapes": np.array([image.shape[:2] for image in images], np.float32),
            }
        from jaxvision.data.detection_transforms import resize_pad

        min_size, max_size = record.get("min_size") or None, record.get("max_size") or None
        no_boxes = np.zeros((0, 4), np.float32)
        resized = [
            resize_pad(image, no_boxes, record["image_size"], min_size, max_size)
            for image in images
        ]
        inputs = {
            "images": np.stack([r[0] for r in resized]),
            "sizes": np.stack([r[3] for r in resized]).astype(np.int32),
        }
        return inputs, np.stack([r[2] for r in resized])

    def outputs(self, record: dict, outputs: dict, placed) -> dict:
        """Boxes from canvas pixels to each image's own: divided by the scales, after the
        letterbox's offsets are taken off and, as the reference's predictor does, clipped to
        the image."""
        scales = placed["scales"] if isinstance(placed, dict) else placed
        sy, sx = scales[:, 0], scales[:, 1]
        factors = np.stack([sx, sy, sx, sy], axis=-1)[:, None, :]
        boxes = outputs["boxes"]
        if isinstance(placed, dict):
            top, left = placed["offsets"][:, 0], placed["offsets"][:, 1]
            boxes = boxes - np.stack([left, top, left, top], axis=-1)[:, None, :]
            boxes = boxes / factors
            h, w = placed["shapes"][:, 0], placed["shapes"][:, 1]
            limits = np.stack([w, h, w, h], axis=-1)[:, None, :]
            return {**outputs, "boxes": np.clip(boxes, 0, limits).astype(np.float32)}
        return {**outputs, "boxes": (boxes / factors).astype(np.float32)}

    def answers(self, class_names: Sequence[str], outputs: dict, top_k: int) -> list[dict]:
        answers = []
        for boxes, scores, classes, valid in zip(
            outputs["boxes"], outputs["scores"], outputs["classes"], outputs["valid"], strict=True
        ):
            found = [
                {"box": [float(v) for v in b], "class": class_names[c], "score": float(s)}
                for b, s, c, ok in zip(boxes, scores, classes, valid, strict=True)
                if ok
            ]
            answers.append({"detections": found})
        return answers
