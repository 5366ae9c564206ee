"""Input-pipeline throughput on the CPU: JPEG decode + inception crop + flip at 224.

  python -m experiments.input_throughput [--data_dir=ROOT] [--num_images=256] \\
      [--feed_img_per_s=7000]

Measures (1) one core: the per-image work of the train pipeline (PIL decode to RGB,
`inception_crop`, `flip`) in a single thread, and (2) the whole pipeline
(`jaxvision.data.train_batches` over an image folder, its threads and `--workers` processes)
on this machine. Prints one JSON line with img/s per core, the pipeline's img/s, and how many
cores it takes to feed `--feed_img_per_s` (e.g. the measured ResNet-50 training speed).
Without --data_dir it writes `--num_images` synthetic 500x375 JPEGs (ImageNet's median size,
smooth content so they compress like photos) to a temporary folder.
"""

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

from jaxvision import data
from jaxvision.data import transforms

_DATA_DIR = flags.DEFINE_string("data_dir", "", "Image folder root/<class>/*.jpg (optional).")
_NUM = flags.DEFINE_integer("num_images", 256, "Synthetic JPEGs to write without --data_dir.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Crop size.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size for the pipeline measurement.")
_STEPS = flags.DEFINE_integer("steps", 8, "Batches timed in the pipeline measurement.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Input worker processes for the pipeline.")
_FEED = flags.DEFINE_float("feed_img_per_s", 7000.0, "Training speed the input must feed.")


def write_synthetic_jpegs(root: str, num_images: int, seed: int = 0) -> None:
    """`num_images` 500x375 JPEGs (quality 90) in 4 class folders: low-frequency colour fields
    plus mild noise, which JPEG compresses to photo-like sizes (~30-60 KB)."""
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        folder = os.path.join(root, f"class_{i % 4}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(image, np.int16) + rng.integers(-12, 13, (375, 500, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i}.jpg"), quality=90
        )


def one_core_img_per_s(paths: list[str], image_size: int) -> float:
    """Decode + inception crop + flip, one image after another in this thread."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        transforms.flip(transforms.inception_crop(pixels, image_size, rng), rng)
    return len(paths) / (time.perf_counter() - started)


def pipeline_img_per_s(root: str) -> float:
    dataset = data.open_dataset("folder", data_dir=root)
    batches = data.train_batches(
        dataset.train,
        data.TrainTransform(_SIZE.value, crop="inception", flip=True),
        global_batch_size=_BATCH.value,
        seed=0,
        worker_count=_WORKERS.value,
    )
    next(batches)  # start-up: threads, workers, first batch
    started = time.perf_counter()
    for _ in range(_STEPS.value):
        next(batches)
    return _STEPS.value * _BATCH.value / (time.perf_counter() - started)


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as scratch:
        root = _DATA_DIR.value
        if not root:
            root = scratch
            write_synthetic_jpegs(root, _NUM.value)
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(root)
            for name in names
            if name.lower().endswith((".jpg", ".jpeg", ".png"))
        )
        per_core = one_core_img_per_s(paths, _SIZE.value)
        pipeline = pipeline_img_per_s(root)
        mean_kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    print(
        json.dumps(
            {
                "img_per_s_per_core": round(per_core, 1),
                "pipeline_img_per_s": round(pipeline, 1),
                "machine_cores": os.cpu_count(),
                "workers": _WORKERS.value,
                "cores_to_feed": round(_FEED.value / per_core, 1),
                "feed_img_per_s": _FEED.value,
                "image_size": _SIZE.value,
                "images": len(paths),
                "mean_jpeg_kb": round(float(mean_kb), 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
