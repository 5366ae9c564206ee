"""Host-side preparation of captioned records (`image`, `text`, `tokens`, ...) for an image-text
model: what reaches the device is numbers only (the raw `text` stays on the host).

- `CaptionTrainTransform`: the image resized and centre-cropped to the model's size, with its
  `tokens`. No flips and no crops: a caption saying "left of" or naming what is in a corner
  would turn false.
- `CaptionEvalTransform`: the same image and tokens, `mask`, and what the image-text
  evaluators read (jaxvision.evaluation.image_text): `label`, `held_out`, `num_objects`,
  `image_index`, `index` as the record has them; with a tokenizer, for records of the
  captioned shapes, `order_tokens` [2, L]: the "A left of B" caption and its swapped foil
  ("B left of A"), with `order_mask` True on two-shape images.
- `IndexedSource`: a source whose examples also carry their position, `index`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxvision.data import shapes_captions, transforms

# Record fields an evaluation keeps, when the record has them.
EVAL_FIELDS = ("label", "held_out", "num_objects", "image_index", "index")


def _rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, 1] grey -> [H, W, 3]; three channels pass."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


@dataclasses.dataclass(frozen=True)
class CaptionTrainTransform:
    """One training pair: {"image": uint8 [S, S, 3], "tokens": int32 [L]}."""

    image_size: int

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        image = transforms.resize_center_crop(example["image"], self.image_size, 1.0)
        return {"image": _rgb(image), "tokens": np.asarray(example["tokens"], np.int32)}


@dataclasses.dataclass(frozen=True)
class CaptionEvalTransform:
    """One evaluation example (module docstring). tokenizer: makes `order_tokens` of the
    captioned shapes' records (None: none). keep_labels: False drops `label` (its classes are
    not the ones the zero-shot prompts name)."""

    image_size: int
    tokenizer: object = None
    keep_labels: bool = True

    def __call__(self, example: dict) -> dict:
        image = transforms.resize_center_crop(example["image"], self.image_size, 1.0)
        out = {"image": _rgb(image), "mask": True}
        if "tokens" in example:
            out["tokens"] = np.asarray(example["tokens"], np.int32)
        for field in EVAL_FIELDS:
            if field in example and (field != "label" or self.keep_labels):
                out[field] = example[field]
        if self.tokenizer is not None and "object_colours" in example:
            out |= self.order_tokens(example)
        return out

    def order_tokens(self, example: dict) -> dict:
        objects = shapes_captions.objects_of(example)
        if len(objects) != 2:
            return {
                "order_tokens": np.zeros((2, self.tokenizer.length), np.int32),
                "order_mask": False,
            }
        texts = [shapes_captions.caption(objects, 0), shapes_captions.foil(objects, 0)]
        return {"order_tokens": self.tokenizer(texts), "order_mask": True}


class IndexedSource(Sequence):
    """`source` whose examples also carry their position, "index"."""

    def __init__(self, source: Sequence):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return {**self.source[index], "index": index}
