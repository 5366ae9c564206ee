"""Input pipeline: datasets as random-access sources, host augmentation, grain batching."""

from jaxvision.data.pipeline import (
    Batcher,
    EvalTransform,
    TrainTransform,
    eval_batches,
    make_global_batch,
    num_eval_batches,
    train_batches,
)
from jaxvision.data.sources import Dataset, open_dataset
from jaxvision.data.transforms import flip, inception_crop, pad_crop, resize_center_crop

__all__ = [
    "Batcher",
    "Dataset",
    "EvalTransform",
    "TrainTransform",
    "eval_batches",
    "flip",
    "inception_crop",
    "make_global_batch",
    "num_eval_batches",
    "open_dataset",
    "pad_crop",
    "resize_center_crop",
    "train_batches",
]
