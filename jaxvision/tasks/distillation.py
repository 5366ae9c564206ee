"""Knowledge distillation: a student classifier learns from a frozen teacher's outputs.

Two recipes:
- Hinton et al. 2015: loss = w * T^2 KL(teacher_T || student_T) + (1 - w) * cross-entropy on
  the labels, with both distributions softened by the temperature T.
- big_vision's "function matching" (Beyer et al. 2022, "Knowledge distillation: A good teacher
  is patient and consistent"): the teacher and the student see the *same* augmented, mixed-up
  image and the loss is the KL alone (w = 1); mixup comes from the config as for any run.

The teacher is the model "teacher" of the train state, kept frozen (no optimizer) and run in
eval mode; it may have its own input size and normalisation: the student's (possibly mixed)
pixels are brought to them on the device.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxvision.tasks.classification import Classification, LossOptions, apply_model
from jaxvision.tasks.images import normalize
from jaxvision.train.losses import distillation_kl, topk_correct


@dataclasses.dataclass(frozen=True)
class Teacher:
    """The frozen teacher: its module and the preprocessing it was trained with."""

    model: nn.Module
    mean: Sequence[float]
    std: Sequence[float]
    image_size: int


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """temperature: T of the softened distributions. weight: w of the KL term (1: KL only, as
    function matching); the labels' cross-entropy gets 1 - w."""

    temperature: float = 1.0
    weight: float = 1.0


class Distillation(Classification):
    """Classification of the student "student" with a loss that follows the "teacher".

    Train metrics add `agreement` (student and teacher top-1 agree) and `kl` (to the teacher at
    T = 1); evaluation adds both beside the student's top-1/top-5.
    """

    kind = "distillation"

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        loss: LossOptions | None = None,
        distill: DistillOptions = DistillOptions(),
    ):
        loss = loss or LossOptions()
        super().__init__(student, mean=mean, std=std, loss=loss, name="student")
        self.teacher, self.distill = teacher, distill

    def teacher_logits(self, models: dict, images: jax.Array) -> jax.Array:
        """images: [B, H, W, C] float, normalised for the student -> the teacher's logits on the
        same pixels (its own normalisation and input size), without gradients."""
        mean = jnp.asarray(self.mean, jnp.float32)
        pixels = images * jnp.asarray(self.std, jnp.float32) + mean
        size = self.teacher.image_size
        if pixels.shape[1:3] != (size, size):
            shape = (pixels.shape[0], size, size, pixels.shape[3])
            pixels = jax.image.resize(pixels, shape, "linear", antialias=True)
        x = (pixels - jnp.asarray(self.teacher.mean)) / jnp.asarray(self.teacher.std)
        logits, _ = apply_model(self.teacher.model, models["teacher"].variables, x, train=False)
        return jax.lax.stop_gradient(logits)

    def prepare(self, batch: dict, rng, models: dict):
        inputs, rng = super().prepare(batch, rng, models)
        # The teacher sees exactly the student's (augmented, mixed) image.
        inputs["teacher_logits"] = self.teacher_logits(models, inputs["image"])
        return inputs, rng

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        variables = {"params": params, **mutable}
        outputs, new_mutable = apply_model(
            self.model, variables, inputs["image"], train=True, rng=rng
        )
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        teacher = inputs["teacher_logits"]
        w = self.distill.weight
        kl = distillation_kl(logits, teacher, self.distill.temperature).mean()
        loss = w * kl
        if w < 1:
            loss += (1 - w) * self.soft_target_loss(logits, inputs["targets"], inputs["weight"])
        metrics = {
            "top1": topk_correct(logits, inputs["label"], 1).mean(),
            "agreement": (jnp.argmax(logits, -1) == jnp.argmax(teacher, -1)).mean(),
            "kl": distillation_kl(logits, teacher).mean(),
        }
        return loss, (metrics, new_mutable)

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        """The student's classification sums plus "agreement" and "kl" (T = 1) to the teacher."""
        student = self.logits(models, batch["image"])
        sums = self.classification_sums(student, batch)
        teacher = self.teacher_logits(models, normalize(batch["image"], self.mean, self.std))
        mask = batch["mask"].astype(jnp.float32)
        agree = (jnp.argmax(student, -1) == jnp.argmax(teacher, -1)).astype(jnp.float32)
        sums["agreement"] = (agree * mask).sum()
        sums["kl"] = (distillation_kl(student, teacher) * mask).sum()
        return sums
