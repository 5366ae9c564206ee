"""Image-text evaluation on the host: zero-shot classification, retrieval and the left/right
order check, from the embeddings an image-text model's eval step returns.

- **Zero-shot classification** (`class_embeddings`, `zero_shot_ranks`): each class is
  described by its texts (class name x prompt template), the class embedding is the mean of
  its texts' unit embeddings, renormalised (CLIP's prompt ensembling); an image's label is the
  class of highest cosine similarity. top-1 / top-5 over the labelled images.
- **Retrieval** (`retrieval_recall`): N (image, text) pairs; image->text recall@k is the share
  of images with a matching text among their k most similar texts, text->image the share of
  texts with a matching image among their k most similar images. Identical texts (equal token
  rows) are one text, matching every image it captions; one image seen in several pairs
  (`image_index`: a captions folder's image with several captions) is one image, matching each
  of its captions. So "a red star", the caption of many images, counts once as a query and is
  retrieved by any of its images.
- **Order** (captioned shapes with two shapes): the share of images more similar to their
  "A left of B" caption than to the swapped "B left of A" (`shapes_captions.foil`); chance 50%.

`ImageTextEvaluator` collects an evaluation pass's batches (`add(outputs, host_batch)`) and
returns these metrics under a prefix (`result`), the way the loop's other evaluators do.
"""

from collections.abc import Sequence

import jax
import numpy as np

RECALL_KS = (1, 5, 10)
EVALUATORS = ("zeroshot", "retrieval", "order")


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit L2 norm (float64)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(text_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
    """text_embeddings: [K * P, E], class k's P prompts in rows k*P .. k*P + P - 1 -> [K, E]:
    each class's mean prompt embedding, renormalised."""
    text = normalize(text_embeddings)
    per_class = text.reshape(num_classes, -1, text.shape[-1]).mean(axis=1)
    return normalize(per_class)


def zero_shot_ranks(image: np.ndarray, classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """image: [N, E], classes: [K, E] (unit rows), labels: [N] -> int [N]: the rank of each
    image's true class among all K by cosine similarity (0: top-1). Ties count against the
    true class."""
    scores = normalize(image) @ normalize(classes).T
    true = scores[np.arange(len(labels)), labels]
    return (scores >= true[:, None]).sum(axis=1) - 1


def _first_hits(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """scores, relevant: [Q, C] -> int [Q]: the rank (0-based) of each query's best-ranked
    relevant candidate (stable order on ties: earlier candidates first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), scores.shape[1])


def retrieval_recall(
    image: np.ndarray,
    text: np.ndarray,
    tokens: np.ndarray,
    image_ids: np.ndarray | None = None,
    ks: Sequence[int] = RECALL_KS,
) -> dict:
    """Recall@k both ways over N pairs (module docstring).

    image, text: [N, E] embeddings of pair i's image and text; tokens: [N, L] pair i's token
    ids (equal rows: one text); image_ids: [N] pair i's image (equal ids: one image; None:
    every pair its own image). Returns {"i2t_recall@k", "t2i_recall@k" for k in ks,
    "num_images", "num_texts"}.
    """
    tokens = np.asarray(tokens)
    ids = np.arange(len(tokens)) if image_ids is None else np.asarray(image_ids)
    unique_images, image_of = np.unique(ids, return_inverse=True)
    unique_texts, text_of = np.unique(tokens, axis=0, return_inverse=True)
    image_of, text_of = image_of.reshape(-1), text_of.reshape(-1)
    # The first pair of each image and of each text gives its embedding.
    first_image = np.zeros(len(unique_images), np.int64)
    first_image[image_of[::-1]] = np.arange(len(ids))[::-1]
    first_text = np.zeros(len(unique_texts), np.int64)
    first_text[text_of[::-1]] = np.arange(len(ids))[::-1]
    relevant = np.zeros((len(unique_images), len(unique_texts)), bool)
    relevant[image_of, text_of] = True
    scores = normalize(np.asarray(image)[first_image]) @ normalize(np.asarray(text)[first_text]).T
    i2t = _first_hits(scores, relevant)
    t2i = _first_hits(scores.T, relevant.T)
    out = {"num_images": float(len(unique_images)), "num_texts": float(len(unique_texts))}
    for k in ks:
        out[f"i2t_recall@{k}"] = float(np.mean(i2t < k))
        out[f"t2i_recall@{k}"] = float(np.mean(t2i < k))
    return out


class ImageTextEvaluator:
    """Collects an evaluation pass of an image-text model and computes the metrics of
    `evaluators` (a subset of EVALUATORS) on what the batches hold.

    outputs (the task's eval step, per batch): "image" [B, E]; "text" [B, E] when the records
    have tokens; "class_text" [K * P, E] (zero-shot prompts' embeddings; filled in the batch
    holding example 0, zeros elsewhere); "order" [B, 2] similarities to the true and the
    swapped caption (two-shape captioned shapes). host batch: "mask" [B], and as the records
    have them "label", "held_out", "num_objects", "tokens", "image_index", "order_mask" (read
    from the outputs, where the task passes them through as global arrays, else the batch).

    Metrics (`result(prefix)`): zeroshot_top1, zeroshot_top5 over the labelled one-shape
    images (all images when records say nothing of shapes), with zeroshot_seen_top1/top5 and
    zeroshot_held_out_top1/top5 when records say `held_out`; i2t_recall@k and t2i_recall@k
    over the first `retrieval_pairs` pairs (0: all), with retrieval_images / retrieval_texts
    (how many distinct ones); order_accuracy over the two-shape images.
    """

    def __init__(
        self,
        evaluators: Sequence[str] = EVALUATORS,
        *,
        num_classes: int = 0,
        retrieval_pairs: int = 1000,
    ):
        unknown = sorted(set(evaluators) - set(EVALUATORS))
        if unknown:
            raise ValueError(f"unknown image-text evaluators {unknown}: use {EVALUATORS}")
        self.evaluators = tuple(evaluators)
        self.num_classes = num_classes
        self.retrieval_pairs = retrieval_pairs
        self.parts: dict[str, list] = {}
        self.class_text = None

    def _keep(self, name: str, value) -> None:
        self.parts.setdefault(name, []).append(np.asarray(value))

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        """outputs: the eval step's (embeddings and the batch's fields, global arrays: what
        every process sees); batch: this process's host batch, for fields the outputs lack."""
        outputs = jax.device_get(outputs)
        fields = {**(batch or {}), **outputs}
        mask = np.asarray(fields["mask"], bool)
        if "class_text" in outputs and np.any(outputs["class_text"]):
            self.class_text = np.asarray(outputs["class_text"])
        for name in ("image", "text", "order"):
            if name in outputs:
                self._keep(name, np.asarray(outputs[name])[mask])
        for name in ("label", "held_out", "num_objects", "tokens", "image_index", "order_mask"):
            if name in fields:
                self._keep(name, np.asarray(fields[name])[mask])

    def collected(self, name: str) -> np.ndarray | None:
        parts = self.parts.get(name)
        return None if not parts else np.concatenate(parts)

    def result(self, prefix: str, *, workdir: str | None = None, step: int = 0) -> dict:
        metrics = {}
        if "zeroshot" in self.evaluators:
            metrics |= self.zero_shot()
        if "retrieval" in self.evaluators:
            metrics |= self.retrieval()
        if "order" in self.evaluators:
            metrics |= self.order()
        return {f"{prefix}/{k}": v for k, v in metrics.items()}

    def zero_shot(self) -> dict:
        labels, image = self.collected("label"), self.collected("image")
        if labels is None or image is None or self.class_text is None or not self.num_classes:
            return {}
        keep = np.ones(len(labels), bool)
        objects = self.collected("num_objects")
        if objects is not None:  # a two-shape image's label names only its left shape
            keep = objects == 1
        ranks = zero_shot_ranks(
            image[keep], class_embeddings(self.class_text, self.num_classes), labels[keep]
        )
        groups = {"": np.ones(len(ranks), bool)}
        held_out = self.collected("held_out")
        if held_out is not None:
            held_out = held_out[keep].astype(bool)
            groups |= {"seen_": ~held_out, "held_out_": held_out}
        metrics = {}
        for group, rows in groups.items():
            if rows.any():
                metrics[f"zeroshot_{group}top1"] = float(np.mean(ranks[rows] < 1))
                metrics[f"zeroshot_{group}top5"] = float(np.mean(ranks[rows] < 5))
        return metrics

    def retrieval(self) -> dict:
        image, text, tokens = (self.collected(k) for k in ("image", "text", "tokens"))
        if image is None or text is None or tokens is None:
            return {}
        n = len(image) if self.retrieval_pairs <= 0 else min(self.retrieval_pairs, len(image))
        ids = self.collected("image_index")
        recall = retrieval_recall(image[:n], text[:n], tokens[:n], None if ids is None else ids[:n])
        recall["retrieval_images"] = recall.pop("num_images")
        recall["retrieval_texts"] = recall.pop("num_texts")
        return recall

    def order(self) -> dict:
        order, mask = self.collected("order"), self.collected("order_mask")
        if order is None or mask is None or not mask.any():
            return {}
        scores = order[mask.astype(bool)]
        return {"order_accuracy": float(np.mean(scores[:, 0] > scores[:, 1]))}
