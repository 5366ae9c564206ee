"""A trained model with its preprocessing, for inference outside any training run.

    predictor = Predictor.from_workdir("workdirs/digits")        # newest readable checkpoint
    outputs = predictor.predict([image_a, image_b])               # uint8 [H, W, C], any size
    outputs["probs"]                                              # [2, K] float32

Built from a workdir's `model.json` (task, model, classes, preprocessing; written by the training
loop) and one checkpoint: it never opens the training data. The forward is jitted once per batch
bucket (1, 2, 4, ... up to `max_batch`): a batch is padded to the next bucket.
"""

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import models
from jaxvision.checkpoint import load_model
from jaxvision.data import transforms
from jaxvision.errors import UserError
from jaxvision.tasks.classification import Classification
from jaxvision.train.state import ModelState

TASKS = {"classification": Classification}


def read_record(workdir: str) -> dict:
    """`<workdir>/model.json`, with a one-line error when it is missing."""
    path = os.path.join(workdir, "model.json")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(workdir, "config.json")):
            raise UserError(
                f"{path} not found: the run predates it; rerun its training command once (a "
                "finished run writes it and changes nothing else)"
            )
        raise UserError(f"{path} not found: --workdir must be a directory a training run wrote")
    with open(path) as f:
        return json.load(f)


def build_task(record: dict):
    """The task of a `model.json` record, its model built as trained."""
    if record.get("task") not in TASKS:
        raise UserError(f"task {record.get('task')!r} has no predictor: use one of {list(TASKS)}")
    model = models.build(
        record["model"],
        num_classes=record["num_classes"],
        dtype=jnp.dtype(record.get("dtype", "float32")),
        **record.get("model_kwargs", {}),
    )
    return TASKS[record["task"]](model, mean=record["mean"], std=record["std"])


class Predictor:
    """task: its `predict(models, images)`; variables: the model's {"params", ...} it predicts
    with; trained_variables / ema_variables: the raw weights and their average (None when the
    run kept none); record: the model.json entries (class_names, image_size, crop_ratio, ...).
    """

    def __init__(
        self,
        record: dict,
        variables: dict,
        *,
        step: int = 0,
        ema_params=None,
        use_ema: bool = True,
        max_batch: int = 64,
    ):
        self.record = record
        self.task = build_task(record)
        self.trained_variables = jax.device_put(variables)
        self.ema_variables = None
        if ema_params is not None:
            self.ema_variables = {**self.trained_variables, "params": jax.device_put(ema_params)}
        use = self.ema_variables if use_ema and self.ema_variables is not None else None
        self.variables = use or self.trained_variables
        self.step = step
        self.class_names = list(record["class_names"])
        self.image_size = record["image_size"]
        self.max_batch = max_batch
        self._forward = jax.jit(self._predict_batch)

    @classmethod
    def from_workdir(
        cls, workdir: str, step: int | None = None, *, ema: bool = True, max_batch: int = 64
    ) -> "Predictor":
        """The run's model at `step` (default: the newest checkpoint that reads), with its EMA
        weights when it kept them and `ema`."""
        record = read_record(workdir)
        found, step, _ = load_model(workdir, step, record.get("model_key"))
        return cls(
            record,
            found["variables"],
            step=step,
            ema_params=found["ema_params"],
            use_ema=ema,
            max_batch=max_batch,
        )

    def _predict_batch(self, variables, images):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return self.task.predict({self.task.trained: model}, images)

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 [H, W, C] images of any size -> [N, S, S, C] as in evaluation."""
        channels = self.record["channels"]
        out = []
        for image in images:
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[:, :, None]
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != channels:
                raise UserError(
                    f"an image of {image.dtype} {image.shape} cannot be labelled: the model "
                    f"takes uint8 [H, W, {channels}]"
                )
            out.append(
                transforms.resize_center_crop(image, self.image_size, self.record["crop_ratio"])
            )
        return np.stack(out)

    def bucket(self, n: int) -> int:
        """The compiled batch size a batch of `n` is padded to: the next power of two."""
        return min(1 << max(n - 1, 0).bit_length(), self.max_batch)

    def predict(self, images: Sequence[np.ndarray]) -> dict:
        """images: uint8 [H, W, C] of any size (or an [N, H, W, C] array) -> the task's outputs
        as numpy, one row per image (classification: {"probs": [N, K] float32})."""
        batch = self.preprocess(list(images))
        outputs = []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            size = self.bucket(len(chunk))
            padded = np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), 0)])
            result = jax.device_get(self._forward(self.variables, padded))
            count = len(chunk)
            outputs.append(jax.tree.map(lambda x, count=count: x[:count], result))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """[(class name, probability)] of the `k` most probable classes, per row of `probs`."""
        k = min(k, probs.shape[-1])
        return [
            [(self.class_names[i], float(row[i])) for i in np.argsort(-row)[:k]] for row in probs
        ]
