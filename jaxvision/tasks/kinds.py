"""How one kind of task meets inference: a workdir's model.json record in, a task, its inputs
and its answers out. The Predictor, bundles, the service and evaluation ask a task's kind
(`jaxvision.tasks.TASK_KINDS`, by the record's "task") rather than switching over kinds.

The defaults suit a classifier-like image task: the record's "image_size" and "crop_ratio"
(resize the short side, then take the central crop), outputs as the task's `predict` returns
them, and the service answering each output's row as a list.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.tasks import TASK_KINDS, TASK_WRAPPERS


class TaskKind:
    """One kind of task (a subclass per kind, registered under its model.json name).

    explains: whether the service and bundles give Grad-CAM of the top-1 class (a task whose
    `predict` gives class probabilities from a zoo classifier: jaxvision.explain)."""

    explains = False

    def build(self, record: dict):
        """The task (its model built as trained) of a model.json record."""
        raise NotImplementedError

    def eval_transform(self, record: dict):
        """The evaluation preprocessing of one example of the run's data, as the run evaluated
        (a `jaxvision.data` transform)."""
        from jaxvision import data

        return data.EvalTransform(record["image_size"], record.get("crop_ratio", 1.0))

    def preprocess(self, record: dict, images: Sequence[np.ndarray]) -> tuple[dict, object]:
        """uint8 [H, W, C] images of any size (checked) -> (the task `predict`'s keyword inputs
        {name: [N, ...]}, what `outputs` needs to map the answers back to each image)."""
        # Imported here: jaxvision.data's package brings the grain input pipeline, which a task
        # used without it (the throughput benchmark on a GPU machine) must not need.
        from jaxvision.data import transforms

        size, crop = record["image_size"], record.get("crop_ratio", 1.0)
        resized = [transforms.resize_center_crop(image, size, crop) for image in images]
        return {"images": np.stack(resized)}, None

    def outputs(self, record: dict, outputs: dict, context) -> dict:
        """`predict`'s numpy outputs, N rows -> what a Predictor returns (e.g. boxes in each
        image's own pixels)."""
        return outputs

    def answers(self, class_names: Sequence[str], outputs: dict, top_k: int) -> list[dict]:
        """One JSON-able answer per image for the service's `POST /v1/predict`."""
        count = len(next(iter(outputs.values())))
        return [{k: np.asarray(v[i]).tolist() for k, v in outputs.items()} for i in range(count)]


def model_options(record: dict) -> dict:
    """The keyword arguments a record's model was built with: num_classes, dtype and its
    options ("model_kwargs")."""
    return dict(
        num_classes=record["num_classes"],
        dtype=jnp.dtype(record.get("dtype", "float32")),
        **record.get("model_kwargs", {}),
    )


def kind_of(record: dict) -> TaskKind:
    """The TaskKind of a model.json record (its "task"); UserError for a kind with none."""
    name = record.get("task")
    if name not in TASK_KINDS:
        raise TASK_KINDS.unknown(name, f"task {name!r} has no predictor", "use one of")
    return TASK_KINDS[name]()


def build_task(record: dict):
    """The task of a model.json record, its model built as trained, wrapped by each of
    `TASK_WRAPPERS` whose field the record has (an int8 model's "quantization")."""
    task = kind_of(record).build(record)
    for field in TASK_WRAPPERS:
        if record.get(field):
            task = TASK_WRAPPERS[field](task, record)
    return task


def check_images(images: Sequence, channels: int) -> list[np.ndarray]:
    """Images as uint8 [H, W, C] arrays with the model's `channels` ([H, W] gray ones get a
    channel axis; PIL images are decoded as training decodes image files); UserError for an
    empty list, an image without pixels, or any other kind of image."""
    if len(images) == 0:
        raise UserError("no images to predict: give one or more")
    checked = []
    for i, image in enumerate(images):
        if _is_pil(image):
            from jaxvision.data import files

            try:
                image = files.to_uint8(image, channels)
            except ValueError as e:
                raise UserError(f"image {i} cannot be read: {e}") from None
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != channels:
            raise UserError(
                f"an image of {image.dtype} {image.shape} cannot be labelled: the model "
                f"takes uint8 [H, W, {channels}] (or a PIL image, decoded as training decodes "
                "files: jaxvision.data.files.load_image)"
            )
        if image.size == 0:
            raise UserError(
                f"image {i} has no pixels ({image.shape[0]} x {image.shape[1]}, height x "
                "width): give images of at least 1 x 1"
            )
        checked.append(image)
    return checked


def _is_pil(image) -> bool:
    """Whether `image` is a PIL image (without importing PIL for those that are not)."""
    return type(image).__module__.startswith("PIL.")
