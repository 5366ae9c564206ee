"""Image-text contrastive training (SigLIP, CLIP) and its evaluation, as a task of the shared
loop.

Train batches are {"image": [B, S, S, 3] uint8, "tokens": [B, L] int32}: row i's caption
describes row i's image. The loss is the model's (`jaxvision.models.image_text.loss`) or the
one the options name: SigLIP's sigmoid loss, chunked over the mesh's batch axes, or CLIP's
softmax loss on embeddings gathered over them (`jaxvision.ops.contrastive`), so a batch split
over data and FSDP devices gives one device's loss. The step logs `train/t` (the logit scale
exp(t)) and `train/b` (SigLIP's bias) beside the loop's loss, gradient norm and learning rate.

Evaluation returns each example's unit embeddings (and the zero-shot prompts' embeddings once
per pass); `jaxvision.evaluation.image_text.ImageTextEvaluator` turns them into zero-shot
top-1/top-5, retrieval recall@k both ways and the left/right order share on the host.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh

from jaxvision.evaluation.image_text import EVALUATORS, ImageTextEvaluator
from jaxvision.ops.contrastive import sigmoid_loss, softmax_loss
from jaxvision.tasks.images import normalize
from jaxvision.tasks.kinds import TaskKind

LOSSES = ("sigmoid", "softmax")
# Batch fields the evaluator reads beside the embeddings, passed through the eval step so that
# they arrive as global arrays (every process sees the whole batch, as the embeddings are).
PASSED_FIELDS = ("mask", "label", "held_out", "num_objects", "tokens", "image_index", "order_mask")


@dataclasses.dataclass(frozen=True)
class ImageTextOptions:
    """loss: "sigmoid" or "softmax"; "" the model's own. evaluators: which of
    jaxvision.evaluation.image_text.EVALUATORS run at every evaluation. retrieval_pairs: the
    first N pairs of an eval split that retrieval ranks (0: all)."""

    loss: str = ""
    evaluators: tuple[str, ...] = EVALUATORS
    retrieval_pairs: int = 1000

    def __post_init__(self):
        if self.loss and self.loss not in LOSSES:
            raise ValueError(f"unknown image-text loss {self.loss!r}: use one of {LOSSES}")
        unknown = sorted(set(self.evaluators) - set(EVALUATORS))
        if unknown:
            raise ValueError(f"unknown image-text evaluators {unknown}: use {EVALUATORS}")


class ImageText:
    """The image-text task for a two-tower `model` (jaxvision.models.image_text), images
    normalised by `mean`/`std` on the device.

    mesh: the loss's mesh (its batch axes split the contrastive loss); None: one device.
    class_tokens: [K * P, L] int32, class k's P zero-shot prompts in rows k*P ..; None: no
        zero-shot classification.
    """

    kind = "image_text"
    head_paths: list = []  # no classifier: init_from keeps every weight

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        mesh: Mesh | None = None,
        class_tokens: np.ndarray | None = None,
        options: ImageTextOptions = ImageTextOptions(),
        name: str = "model",
    ):
        self.model, self.mean, self.std, self.mesh = model, mean, std, mesh
        self.options, self.trained = options, name
        self.loss_name = options.loss or model.loss
        self.class_tokens = None if class_tokens is None else np.asarray(class_tokens, np.int32)

    def init_variables(self, batch: dict):
        """`rng -> variables` of the model, from an example batch ("image", "tokens")."""
        images = jnp.zeros((1, *batch["image"].shape[1:]), jnp.float32)
        tokens = jnp.zeros((1, *batch["tokens"].shape[1:]), jnp.int32)
        return lambda rng: self.model.init({"params": rng, "dropout": rng}, images, tokens)

    def prepare(self, batch: dict, rng, models: dict):
        inputs = {
            "image": normalize(batch["image"], self.mean, self.std),
            "tokens": batch["tokens"],
        }
        return inputs, rng

    def embed(self, variables: dict, images=None, tokens=None, *, train=False, rng=None):
        """(image [B, E], text [T, E]) unit embeddings (None for a side not given); images
        normalised."""
        rngs = {"dropout": rng} if train else {}
        image = text = None
        if images is not None:
            image = self.model.apply(variables, images, train, method="embed_images", rngs=rngs)
        if tokens is not None:
            text = self.model.apply(variables, tokens, train, method="embed_texts", rngs=rngs)
        return image, text

    def loss(self, params, mutable: dict, inputs: dict, rng, models: dict):
        variables = {"params": params, **mutable}
        image, text = self.embed(variables, inputs["image"], inputs["tokens"], train=True, rng=rng)
        t = params["t"][0]
        metrics = {"t": jnp.exp(t)}
        if self.loss_name == "sigmoid":
            b = params["b"][0] if "b" in params else jnp.float32(0)
            loss = sigmoid_loss(image, text, t, b, mesh=self.mesh)
            metrics["b"] = b
        else:
            loss = softmax_loss(image, text, t, mesh=self.mesh)
        return loss, (metrics, {})

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        """{"image": [B, E]; "text": [B, E] with tokens; "order": [B, 2] the image's cosine
        similarity to its caption and to the swapped one, with order_tokens; "class_text":
        [K * P, E] the prompts' embeddings in the batch holding example 0 (zeros in the
        others), with class tokens and "index"} and the batch's `PASSED_FIELDS`."""
        variables = models[self.trained].variables
        images = normalize(batch["image"], self.mean, self.std)
        tokens = batch.get("tokens")
        image, text = self.embed(variables, images, tokens)
        out = {"image": image, **{k: batch[k] for k in PASSED_FIELDS if k in batch}}
        if text is not None:
            out["text"] = text
        if "order_tokens" in batch:
            pairs = batch["order_tokens"]
            _, order = self.embed(variables, tokens=pairs.reshape(-1, pairs.shape[-1]))
            out["order"] = jnp.einsum("be,bke->bk", image, order.reshape(*pairs.shape[:2], -1))
        if self.class_tokens is not None and "index" in batch:
            prompts = jnp.asarray(self.class_tokens)
            shape = jax.eval_shape(lambda v: self.embed(v, tokens=prompts)[1], variables)
            out["class_text"] = jax.lax.cond(
                jnp.any((batch["index"] == 0) & batch["mask"]),
                lambda v: self.embed(v, tokens=prompts)[1],
                lambda v: jnp.zeros(shape.shape, shape.dtype),
                variables,
            )
        return out

    def evaluator(self, class_names: Sequence[str]) -> ImageTextEvaluator:
        """The evaluator of one pass; the zero-shot classes are the class tokens' (one per
        `class_names` entry, when they are given)."""
        prompts = 0 if self.class_tokens is None else len(self.class_tokens)
        return ImageTextEvaluator(
            self.options.evaluators,
            num_classes=len(class_names) if prompts else 0,
            retrieval_pairs=self.options.retrieval_pairs,
        )

    def predict(self, models: dict, images) -> dict:
        """images: [B, H, W, C] uint8, preprocessed -> {"embeddings": [B, E] float32, unit}."""
        variables = models[self.trained].variables
        image, _ = self.embed(variables, normalize(images, self.mean, self.std))
        return {"embeddings": image}


class ImageTextKind(TaskKind):
    """An image-text run at inference: the record's "model" (jaxvision.models.image_text, its
    "model_kwargs") with "mean"/"std"; `predict` gives unit image embeddings."""

    def build(self, record: dict) -> ImageText:
        from jaxvision.models import image_text

        model = image_text.build(
            record["model"],
            dtype=jnp.dtype(record.get("dtype", "float32")),
            **record.get("model_kwargs", {}),
        )
        return ImageText(model, mean=record["mean"], std=record["std"])
