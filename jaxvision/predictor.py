"""A trained model with its preprocessing, for inference outside any training run.

    predictor = Predictor.from_workdir("workdirs/digits")        # newest readable checkpoint
    outputs = predictor.predict([image_a, image_b])               # uint8 [H, W, C], any size
    outputs["probs"]                                              # [2, K] float32

A detector's outputs are its detections in each image's own pixels: {"boxes": [N, D, 4],
"scores": [N, D], "classes": [N, D], "valid": [N, D]}.

Built from a workdir's `model.json` (task, model, classes, preprocessing; written by the training
loop) and one checkpoint: it never opens the training data. The record's task kind
(`jaxvision.tasks.TASK_KINDS`) builds the task and says how images are preprocessed and outputs
mapped back; wrappers keyed by record fields (`TASK_WRAPPERS`: an int8 model's "quantization")
wrap the task. The forward is jitted once per batch
bucket (1, 2, 4, ... up to `max_batch`): a batch is padded to the next bucket.
"""

import json
import os
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import cpu_compile, models, weights
from jaxvision.checkpoint import load_model
from jaxvision.errors import UserError
from jaxvision.state import ModelState
from jaxvision.tasks.kinds import build_task, check_images, kind_of

__all__ = ["Predictor", "build_task", "eval_transform", "read_record"]


def read_record(workdir: str) -> dict:
    """`<workdir>/model.json`, with a one-line error when it is missing or damaged."""
    path = os.path.join(workdir, "model.json")
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(workdir, "config.json")):
            raise UserError(
                f"{path} not found: the run predates it; rerun its training command once (a "
                "finished run writes it and changes nothing else)"
            )
        raise UserError(f"{path} not found: --workdir must be a directory a training run wrote")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path} is not valid JSON ({e}): rerun the run's training command once (it "
                "writes model.json again and changes nothing else)"
            ) from None


def eval_transform(record: dict):
    """The evaluation preprocessing of one example, as the run evaluated: what a split of the
    run's data goes through before the model (its task kind's, jaxvision.tasks.kinds)."""
    return kind_of(record).eval_transform(record)


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
        self.task_kind = kind_of(record)
        self.task = build_task(record)
        self.kind = self.task.kind
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
        self._forwards = {}
        self.compile_with(cpu_compile.DEFAULT)

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

    @classmethod
    def random(
        cls,
        name: str,
        *,
        image_size: int,
        num_classes: int = 1000,
        channels: int = 3,
        seed: int = 0,
        max_batch: int = 64,
        **model_kwargs,
    ) -> "Predictor":
        """A zoo classifier with freshly initialised weights, as a workdir's Predictor would
        hold it (ImageNet normalisation, crop 0.875): for benchmarks and tests. A model with
        an image_size option (ViTs) is built for `image_size`."""
        record = _zoo_record(name, image_size, num_classes, channels, model_kwargs)
        return cls(record, _fresh_variables(record, seed), max_batch=max_batch)

    @classmethod
    def from_weights(
        cls,
        source: str,
        model: str | None = None,
        *,
        num_classes: int | None = None,
        image_size: int | None = None,
        max_batch: int = 64,
        **model_kwargs,
    ) -> "Predictor":
        """A zoo classifier with imported weights: `source` is a weight file (torchvision/timm
        .safetensors, big_vision .npz) or a hub name, `hf-hub:ORG/NAME[@REVISION]`.

        From the hub, the model, its options, classes and preprocessing (timm's pretrained_cfg:
        input size, mean, std, crop) come from the repository's config.json where jaxvision maps
        its architecture; `model` names the zoo model otherwise. The number of classes is the
        file's classifier's. ImageNet normalisation and crop 0.875 unless the config says."""
        config, hub_kwargs = {}, {}
        if weights.hub.is_hub_name(source):
            found = weights.hub.fetch(source)
            if model is None and found.model is None:
                raise weights.hub.unknown_architecture(found)
            model = model or found.model
            weights.hub.check_model(found, model)
            config, hub_kwargs, source = found.config, found.model_kwargs, found.path
        elif model is None:
            raise UserError(
                f"name the zoo model {source} holds: Predictor.from_weights(path, model)"
            )
        tensors = weights.read_tensors(source, model)
        pretrained = config.get("pretrained_cfg", {})
        num_classes = num_classes or _classifier_outputs(model, tensors)
        model_kwargs = {**hub_kwargs, **model_kwargs}
        size = (
            image_size or model_kwargs.get("image_size") or pretrained.get("input_size", [224])[-1]
        )
        record = _zoo_record(model, size, num_classes, 3, model_kwargs)
        if "mean" in pretrained and "std" in pretrained:  # timm's are fractions of 1
            record["mean"] = [255.0 * m for m in pretrained["mean"]]
            record["std"] = [255.0 * d for d in pretrained["std"]]
        record["crop_ratio"] = pretrained.get("crop_pct", record["crop_ratio"])
        names = config.get("label_names")
        if isinstance(names, list) and len(names) == num_classes:
            record["class_names"] = [str(n) for n in names]
        variables, kept = weights.import_weights(model, tensors, _variable_shapes(record))
        if kept:
            raise UserError(
                f"{source} has no classifier for {num_classes} classes ({kept[0]} missing or of "
                "another shape): a predictor needs one; fine-tune it with init_from"
            )
        return cls(record, variables, max_batch=max_batch)

    def _predict_batch(self, variables, inputs: dict):
        model = ModelState(variables=variables, opt_state=None, step=0, rng=None)
        return self.task.predict({self.task.trained: model}, **inputs)

    def compiled_forward(self, choice: str):
        """The jitted forward(variables, inputs), compiled with `jaxvision.cpu_compile` choice
        `choice` (one per choice, kept)."""
        if choice not in self._forwards:
            options = cpu_compile.options(choice)
            self._forwards[choice] = jax.jit(self._predict_batch, compiler_options=options)
        return self._forwards[choice]

    def compile_with(self, choice: str) -> None:
        """Predicts through the forward compiled with `choice` from now on."""
        if choice not in cpu_compile.CHOICES:
            raise UserError(
                f"unknown CPU compile choice {choice!r}: use auto or one of "
                f"{', '.join(cpu_compile.CHOICES)}"
            )
        self.compile_choice = choice
        self._forward = self.compiled_forward(choice)

    def choose_compile(self, choices=tuple(cpu_compile.CHOICES)) -> dict:
        """Times the forward of one image compiled with each of `choices` on this CPU, predicts
        with the fastest from now on and drops the others' programs: cpu_compile.fastest's
        {"chosen", "ms", "cpu"}."""
        size, channels = self.image_size, self.record["channels"]
        inputs, _ = self.preprocess([np.zeros((size, size, channels), np.uint8)])

        def run_with(choice):
            jax.block_until_ready(self.compiled_forward(choice)(self.variables, inputs))

        found = cpu_compile.fastest(run_with, choices)
        self.compile_with(found["chosen"])
        self._forwards = {found["chosen"]: self._forward}
        return found

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[dict, object]:
        """uint8 [H, W, C] images of any size -> (the model's inputs as in evaluation, what maps
        the outputs back to each image), by the task's kind (jaxvision.tasks.kinds).
        Classification: {"images": [N, S, S, C]}, resized and center-cropped, and None.
        Detection: {"images": [N, S, S, 3] canvases, "sizes": [N, 2]} and the scales [N, 2]
        (sy, sx) that map its boxes back to each image's pixels."""
        checked = check_images(images, self.record["channels"])
        return self.task_kind.preprocess(self.record, checked)

    def bucket(self, n: int) -> int:
        """The compiled batch size a batch of `n` is padded to: the next power of two."""
        return min(1 << max(n - 1, 0).bit_length(), self.max_batch)

    def buckets(self) -> list[int]:
        """Every batch size the forward compiles for: 1, 2, 4, ... up to max_batch."""
        sizes = [1]
        while sizes[-1] < self.max_batch:
            sizes.append(self.bucket(sizes[-1] + 1))
        return sizes

    def run_bucketed(self, forward, inputs: dict) -> dict:
        """forward(variables, batch) over preprocessed `inputs` ({name: [N, ...]}), max_batch
        rows at a time, each chunk padded to its bucket: numpy outputs, N rows."""
        total = len(next(iter(inputs.values())))
        outputs = []
        for start in range(0, total, self.max_batch):
            chunk = {k: v[start : start + self.max_batch] for k, v in inputs.items()}
            count = len(next(iter(chunk.values())))
            size = self.bucket(count)
            padded = {
                k: np.concatenate([v, np.repeat(v[:1], size - count, 0)]) for k, v in chunk.items()
            }
            result = jax.device_get(forward(self.variables, padded))
            outputs.append(jax.tree.map(lambda x, count=count: x[:count], result))
        return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)

    def predict(self, images: Sequence[np.ndarray]) -> dict:
        """images: uint8 [H, W, C] of any size (or an [N, H, W, C] array; or PIL images,
        decoded as training decodes files) -> the task's outputs as numpy, one row per image
        (classification: {"probs": [N, K] float32}; detection: {"boxes": [N, D, 4] in each
        image's pixels, "scores", "classes", "valid": [N, D]}).
        UserError for no images, an image without pixels or of another dtype or channels."""
        inputs, context = self.preprocess(list(images))
        outputs = self.run_bucketed(self._forward, inputs)
        return self.task_kind.outputs(self.record, outputs, context)

    def answers(self, outputs: dict, top_k: int = 5) -> list[dict]:
        """`predict`'s outputs as one JSON-able answer per image (the service's)."""
        return self.task_kind.answers(self.class_names, outputs, top_k)

    def explainer(self):
        """Grad-CAM of this classifier (jaxvision.explain.service.Explainer); None for a task
        whose kind has no explanations."""
        if not self.task_kind.explains:
            return None
        from jaxvision.explain.service import Explainer

        return Explainer.of(self)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """[(class name, probability)] of the `k` most probable classes, per row of `probs`."""
        k = min(k, probs.shape[-1])
        return [
            [(self.class_names[i], float(row[i])) for i in np.argsort(-row)[:k]] for row in probs
        ]


def _zoo_record(name, image_size, num_classes, channels, model_kwargs) -> dict:
    """The model.json entries of a zoo classifier made outside a run: ImageNet normalisation,
    crop 0.875; a model with an image_size option (ViTs) is built for `image_size`."""
    if "image_size" in models.options(name):
        model_kwargs = {**model_kwargs, "image_size": image_size}
    return {
        "task": "classification",
        "model": name,
        "model_kwargs": model_kwargs,
        "num_classes": num_classes,
        "class_names": [f"class {i}" for i in range(num_classes)],
        "image_size": image_size,
        "crop_ratio": 0.875,
        "channels": channels,
        "mean": [123.675, 116.28, 103.53][:channels],
        "std": [58.395, 57.12, 57.375][:channels],
    }


def _fresh_variables(record: dict, seed: int) -> dict:
    model = build_task(record).model
    shape = (1, record["image_size"], record["image_size"], record["channels"])
    return dict(jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape, jnp.float32)))


def _variable_shapes(record: dict) -> dict:
    """The model's variables as zeros of their shapes and dtypes, without running its init."""
    model = build_task(record).model
    image = jax.ShapeDtypeStruct((1, record["image_size"], record["image_size"], 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), image)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), dict(shapes))


def _classifier_outputs(model: str, tensors: dict) -> int:
    """The number of classes of a torch-named state dict: its classifier's bias length."""
    module = ".".join(
        re.sub(r"_(\d+)$", r".\1", part) for part in models.classifier(model).split("/")
    )
    bias = tensors.get(f"{module}.bias")
    if bias is None or bias.ndim != 1 or not bias.shape[0]:
        raise UserError(
            f"the weights have no classifier ({module}.bias): a predictor needs one; "
            "fine-tune them with init_from, or pass num_classes"
        )
    return int(bias.shape[0])
