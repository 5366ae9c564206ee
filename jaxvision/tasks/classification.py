"""Image classification: softmax cross-entropy on `label`, with label smoothing, class weights
and mixup/CutMix; top-1/top-5, per-class reports and a confusion matrix in evaluation."""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxvision import models
from jaxvision.evaluation.classification import ClassificationEvaluator
from jaxvision.evaluation.metrics import confusion_counts
from jaxvision.tasks.images import image_model_init, normalize
from jaxvision.tasks.kinds import TaskKind, model_options
from jaxvision.train.losses import cross_entropy, topk_correct
from jaxvision.train.mixing import mixup_cutmix


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Batch mixing on the device (`mixup_cutmix`'s arguments)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    switch_prob: float = 0.5  # CutMix instead of mixup, when both are on
    prob: float = 1.0  # share of batches mixed


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """label_smoothing applies before mixing; train/top1 counts the unmixed labels.
    class_weights: [K] loss weight per class (imbalanced data); None: all 1."""

    label_smoothing: float = 0.0
    mixing: Mixing | None = None
    class_weights: tuple[float, ...] | None = None


def apply_model(model: nn.Module, variables: dict, images, *, train: bool, rng=None):
    """Runs an image model; returns (outputs, its updated mutable collections: {} in eval)."""
    mutable = [k for k in variables if k != "params"]
    rngs = {"dropout": rng} if train else {}
    if train and mutable:
        outputs, updates = model.apply(variables, images, train=True, mutable=mutable, rngs=rngs)
        return outputs, dict(updates)
    return model.apply(variables, images, train=train, rngs=rngs), {}


class Classification:
    """The classification task for `model` (images normalised by `mean`/`std` on the device).

    Batches: {"image": [B, H, W, C] uint8, "label": [B] int32} (+ "mask" [B] bool in evaluation).
    """

    kind = "classification"

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        loss: LossOptions = LossOptions(),
        name: str = "model",
    ):
        self.model, self.mean, self.std, self.options = model, mean, std, loss
        self.trained = name  # the model the train step updates
        self.num_classes = model.num_classes
        # What a new head replaces (init_from with other classes): the model's classifier.
        self.head_paths = [("params", model.classifier)]

    def init_variables(self, batch: dict):
        """`rng -> variables` of the model, from an example batch."""
        return image_model_init(self.model, batch["image"])

    def prepare(self, batch: dict, rng, models: dict):
        images = normalize(batch["image"], self.mean, self.std)
        targets = jax.nn.one_hot(batch["label"], self.num_classes)
        if self.options.label_smoothing:
            targets = optax.smooth_labels(targets, self.options.label_smoothing)
        if self.options.mixing:
            mix_rng, rng = jax.random.split(rng)
            mixing = dataclasses.asdict(self.options.mixing)
            images, targets, _ = mixup_cutmix(mix_rng, images, targets, **mixing)
        # Per-example weights from the (mixed) targets: sum(w_i l_i) / sum(w_i), as torch's
        # CrossEntropyLoss(weight=...) with mean reduction.
        weights = 1.0
        if self.options.class_weights is not None:
            weights = targets @ jnp.asarray(self.options.class_weights, jnp.float32)
        inputs = {"image": images, "targets": targets, "label": batch["label"], "weight": weights}
        return inputs, rng

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        variables = {"params": params, **mutable}
        outputs, new_mutable = apply_model(
            self.model, variables, inputs["image"], train=True, rng=rng
        )
        # Models with auxiliary classifiers (GoogLeNet, Inception v3 with `aux_logits`) return
        # (logits, *aux_logits) in training; each aux loss adds with the model's
        # `aux_loss_weight` (0.3 in GoogLeNet's paper, 0.4 in Inception v3's).
        logits, *aux_logits = outputs if isinstance(outputs, tuple) else (outputs,)
        loss = self.soft_target_loss(logits, inputs["targets"], inputs["weight"])
        for aux in aux_logits:
            loss += self.model.aux_loss_weight * self.soft_target_loss(
                aux, inputs["targets"], inputs["weight"]
            )
        top1 = topk_correct(logits, inputs["label"], 1).mean()
        return loss, ({"top1": top1}, new_mutable)

    @staticmethod
    def soft_target_loss(logits, targets, weights):
        losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
        return jnp.sum(losses * weights) / jnp.sum(jnp.broadcast_to(weights, losses.shape))

    def logits(self, models: dict, images) -> jax.Array:
        """[B, K] float32 logits of the model in eval mode; images: [B, H, W, C] uint8."""
        variables = models[self.trained].variables
        x = normalize(images, self.mean, self.std)
        return apply_model(self.model, variables, x, train=False)[0]

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        """Sums over the batch's real examples, which add up exactly over a pass:
        {"count", "loss", "top1", "top5", "confusion": int32 [K, K] (rows true class)}."""
        return self.classification_sums(self.logits(models, batch["image"]), batch)

    def classification_sums(self, logits, batch: dict) -> dict:
        labels = batch["label"]
        mask = batch["mask"].astype(jnp.float32)
        return {
            "count": mask.sum(),
            "loss": (cross_entropy(logits, labels) * mask).sum(),
            "top1": (topk_correct(logits, labels, 1) * mask).sum(),
            "top5": (topk_correct(logits, labels, 5) * mask).sum(),
            "confusion": confusion_counts(logits, labels, batch["mask"], self.num_classes),
        }

    def evaluator(self, class_names: Sequence[str]) -> ClassificationEvaluator:
        return ClassificationEvaluator(class_names)

    def predict(self, models: dict, images) -> dict:
        """images: [B, H, W, C] uint8, preprocessed -> {"probs": [B, K] float32}."""
        return {"probs": jax.nn.softmax(self.logits(models, images))}


class ClassificationKind(TaskKind):
    """Classification at inference: the record's "model" (jaxvision.models) with its
    "mean"/"std"; images resized and centre-cropped to "image_size" by "crop_ratio"; answers:
    the top-k labels with their probabilities."""

    explains = True

    def build(self, record: dict) -> Classification:
        model = models.build(record["model"], **model_options(record))
        return Classification(model, mean=record["mean"], std=record["std"])

    def answers(self, class_names: Sequence[str], outputs: dict, top_k: int) -> list[dict]:
        answers = []
        for probs in outputs["probs"]:
            order = np.argsort(-probs, kind="stable")[:top_k]
            labels = [
                {"label": class_names[i], "index": int(i), "probability": float(probs[i])}
                for i in order
            ]
            answers.append({"labels": labels})
        return answers
