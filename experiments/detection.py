"""Object detection: data -> sharded detector -> the shared train loop -> COCO evaluation.

  python -m experiments.detection --workdir=DIR   # RetinaNet on the embedded shapes set
  python -m experiments.detection --config=experiments/configs/detection/retinanet_r50_fpn_coco.py \
      --workdir=DIR --config.data_dir=COCO_ROOT

`setup` reads top to bottom: mesh, input (records with boxes, box-aware transforms), detector
and optimizer, task (anchors, loss, post-processing), and the run (its state and shardings,
`jaxvision.train.setup.make_run`); the loop (resume, train, evaluate, checkpoint, stop) is the
library's, `jaxvision.train.loop`. Rerunning with the same workdir resumes.
"""

from jaxvision import signals

if __name__ == "__main__":
    signals.remember_sigterm()  # first: the imports below take seconds

import functools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402

from jaxvision import cli, data  # noqa: E402
from jaxvision.data.detection_transforms import (  # noqa: E402
    DetectionEvalTransform,
    DetectionTrainTransform,
)
from jaxvision.data.yolo_transforms import (  # noqa: E402
    YOLOEvalTransform,
    YOLOTrainTransform,
    close_mosaic_position,
)
from jaxvision.errors import UserError  # noqa: E402
from jaxvision.models import detection as detectors  # noqa: E402
from jaxvision.tasks.detection import detection_task, family_options  # noqa: E402
from jaxvision.train import build, loop, steps  # noqa: E402
from jaxvision.train.setup import NamedModel, make_run  # noqa: E402

DEFAULT_CONFIG = os.path.join(
    os.path.dirname(__file__), "configs", "detection", "retinanet_shapes.py"
)


def open_dataset(config) -> data.Dataset:
    return build.dataset(config)


def yolo_transforms(config, dataset, max_boxes: int, total_steps: int):
    """(train, eval) transforms of YOLO's recipe: mosaic (closed for the last
    close_mosaic_epochs), random affine, HSV and flips; a centred letterbox to evaluate. A
    mosaic gathers four images' boxes, so a batch row holds up to 4x max_boxes of them."""
    options = config.yolo_augment_options.to_dict()
    close_epochs = options.pop("close_mosaic_epochs", 10)
    if "hsv" in options:
        options["hsv"] = tuple(options["hsv"])
    stream = total_steps * config.batch_size
    until = close_mosaic_position(stream, len(dataset.train), close_epochs)
    train = YOLOTrainTransform(
        config.image_size,
        source=dataset.train,
        mosaic_until=until,
        max_boxes=4 * max_boxes,
        **options,
    )
    return train, YOLOEvalTransform(config.image_size, max_boxes)


def transforms(config, max_boxes: int):
    """(train, eval) transforms: resize keeping the aspect (min_size/max_size) or to the canvas
    (min_size 0), padded to the square canvas `image_size`."""
    min_size = config.min_size or None
    max_size = config.max_size or None
    train = DetectionTrainTransform(
        config.image_size,
        min_size,
        max_size,
        max_boxes,
        jitter=tuple(config.scale_jitter) or None,
        flip=config.flip,
        photometric=config.photometric,
        zoom_out=config.zoom_out,
        iou_crop=config.iou_crop,
        crop=tuple(config.random_crop) or None,
        min_visible=config.min_visible,
    )
    return train, DetectionEvalTransform(config.image_size, min_size, max_size, max_boxes)


def predictor_record(config, dataset, kwargs, options) -> dict:
    """What `<workdir>/model.json` keeps for inference (jaxvision.predictor)."""
    return {
        "task": "detection",
        "model": config.model,
        "model_kwargs": kwargs,
        "model_key": "model",
        "dtype": config.dtype,
        "num_classes": int(dataset.num_classes),
        "class_names": [str(n) for n in dataset.class_names],
        "image_size": config.image_size,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "max_boxes": 0,
        "channels": 3,
        "options": options,
    }


def setup(config) -> loop.Run:
    """Mesh, input, detector and optimizer, task, and the run over them."""
    mesh = build.mesh(config)

    # Input: records with boxes; transforms that move the boxes with the image.
    dataset = open_dataset(config)
    max_boxes = config.max_boxes or dataset.max_boxes or 100
    total_steps = config.total_steps or math.ceil(
        config.num_epochs * len(dataset.train) / config.batch_size
    )
    if config.yolo_augment:
        train_transform, eval_transform = yolo_transforms(config, dataset, max_boxes, total_steps)
    else:
        train_transform, eval_transform = transforms(config, max_boxes)

    # Detector and optimizer (torchvision's trainable_backbone_layers freezes the first stages).
    if config.freeze_backbone:
        raise UserError(
            "freeze_backbone is for classifiers: a detector freezes its first backbone stages "
            "with trainable_backbone_layers (0..5)"
        )
    if config.get("quantize_training") or config.get("prune_masks"):
        import jaxvision.compress.training  # noqa: F401  (registers QAT, pruning masks)

    model_options = build.ModelOptions.from_config(config, registry=detectors)
    model = model_options.build(detectors, num_classes=dataset.num_classes)
    trainable = None if config.trainable_backbone_layers < 0 else config.trainable_backbone_layers
    image_shape = (config.image_size, config.image_size, 3)
    tx, schedule, frozen = build.optimizer(
        build.OptimizerOptions.from_config(config),
        model,
        image_shape,
        total_steps,
        len(dataset.train) / config.batch_size,
        frozen=detectors.frozen_backbone(model, trainable),
    )

    # Task: anchors for the canvas, the family's loss and post-processing.
    options = family_options(model.family, **config.detection.to_dict())
    steps_per_epoch = len(dataset.train) / config.batch_size
    schedule_kw = (
        {"steps_per_epoch": steps_per_epoch, "epochs": math.ceil(total_steps / steps_per_epoch)}
        if model.family == "yolo"
        else {}
    )
    task = detection_task(model, canvas=config.image_size, options=options, **schedule_kw)
    train_step = steps.make_train_step(task, tx, build.update_options(config, frozen, schedule))

    # The run: the detector's state laid out by the same rules as a classifier's.
    example = {"image": np.zeros((1, *image_shape), np.uint8)}
    record = predictor_record(config, dataset, model_options.kwargs, config.detection.to_dict())
    record["max_boxes"] = max_boxes
    record["letterbox"] = bool(config.yolo_augment)
    return make_run(
        task,
        {task.trained: NamedModel(task.init_variables(example), tx, ema=config.ema_decay > 0)},
        mesh=mesh,
        sharding=config.sharding,
        seed=config.seed,
        train_step=train_step,
        train_source=dataset.train,
        train_transform=train_transform,
        eval_transform=eval_transform,
        evals=build.evals(config, {"test": dataset.test, "train": dataset.train}),
        class_names=dataset.class_names,
        total_steps=total_steps,
        schedule=schedule,
        predictor=record,
    )


train_and_evaluate = functools.partial(loop.train_and_evaluate, setup=setup)

if __name__ == "__main__":
    cli.run(train_and_evaluate, default_config=DEFAULT_CONFIG)
