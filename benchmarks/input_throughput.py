"""Input-pipeline throughput on the CPU: JPEG decode + inception crop + flip at 224.

  python -m benchmarks.input_throughput [--data_dir=ROOT] [--num_images=256] [--repeats=3] \\
      [--synthetic_size=500x375] [--workers=0] [--feed_img_per_s=7000]

  Issue 19's figures: run it with TensorFlow installed (its own venv, with this project
  installed editable) and --workers=1,2.

Per core, pinned to one CPU (`os.sched_setaffinity`), one image after another, each chain run
`--repeats` times in turn so that all of them see the same machine load:
  - `ours`: `jpeg.open_image` (header only) + `inception_crop` + `flip`, what the train
    transform does with a JPEG: the box drawn from the header size, decoded by libjpeg-turbo
    (simplejpeg) at the scale the box needs, resized by OpenCV's plain bilinear filter up to 2x
    (PIL's antialiased one beyond);
  - `ours_antialiased`: `ours` with PIL's antialiased resize throughout (the resampling
    jaxvision used before), which shows what the resize costs in the chain;
  - `before`: jaxvision before issue 19, `files.load_image` (PIL, whole image) + the same box
    + PIL's antialiased resize + `flip`;
  - `decoded`: `files.load_image` + `inception_crop` + `flip`, the path of a PNG;
  - `pil`: a plain PIL chain, open -> resize of the box -> mirror -> numpy;
  - `tf_data` and `tf_function`, only when TensorFlow imports: `extract_jpeg_shape` +
    `sample_distorted_bounding_box` + `decode_and_crop_jpeg` + `resize` (bilinear, not
    antialiased: TensorFlow's default) + `random_flip` + cast to uint8, as a `tf.data` map with
    one thread and as a `tf.function` per image; `ours_over_tf` divides by the faster of the
    two, pass by pass. `tf_antialias` is the `tf.function` with `resize(antialias=True)`.
Then the resize alone (`resize_us`: microseconds per 224 crop of decoded pixels, the same boxes,
pinned too): the train crop's and PIL's antialiased one.
Each chain is timed by wall clock and by the process's CPU time (steadier on a shared
machine). Then the whole pipeline (`jaxvision.data.train_batches` over the same files, its
threads and `--workers` processes, all cores), with images as `jpeg.open_image` gives them
(`ours_*`) and decoded whole (`decoded_*`). Prints one JSON line; its `img_per_s_per_core`
is ours (median per CPU-second) and `pipeline_img_per_s` ours with the first --workers value.
Without --data_dir it writes `--num_images` synthetic JPEGs (500x375 by default, ImageNet's
median size; low-frequency colour plus noise at quality 90, ~50 KB, which compresses like a
photo) to a temporary folder.
"""

import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from jaxvision import data
from jaxvision.data import files, jpeg, transforms

_DATA_DIR = flags.DEFINE_string("data_dir", "", "Image folder root/<class>/*.jpg (optional).")
_NUM = flags.DEFINE_integer("num_images", 256, "Synthetic JPEGs to write without --data_dir.")
_SYNTHETIC = flags.DEFINE_string("synthetic_size", "500x375", "WxH of the synthetic JPEGs.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Crop size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes of each per-core chain.")
_CORE = flags.DEFINE_integer("core", -1, "CPU to pin the per-core chains to (-1: the last).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size for the pipeline measurement.")
_STEPS = flags.DEFINE_integer("steps", 32, "Batches timed in the pipeline measurement.")
_WORKERS = flags.DEFINE_list(
    "workers", ["0"], "Worker processes of each pipeline run (0: threads only), e.g. 1,2."
)
_FEED = flags.DEFINE_float("feed_img_per_s", 7000.0, "Training speed the input must feed.")


def write_synthetic_jpegs(
    root: str, num_images: int, seed: int = 0, width: int = 500, height: int = 375
) -> None:
    """`num_images` JPEGs (quality 90) in 4 class folders: low-frequency colour fields plus mild
    noise, which JPEG compresses to photo-like sizes (~50 KB at 500x375)."""
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        folder = os.path.join(root, f"class_{i % 4}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(image, np.int16) + rng.integers(-12, 13, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"{i}.jpg"), quality=90
        )


def ours(paths: list[str], size: int) -> None:
    rng = np.random.default_rng(0)
    for path in paths:
        transforms.flip(transforms.inception_crop(jpeg.open_image(path), size, rng), rng)


def decoded(paths: list[str], size: int) -> None:
    rng = np.random.default_rng(0)
    for path in paths:
        transforms.flip(transforms.inception_crop(files.load_image(path), size, rng), rng)


def pil(paths: list[str], size: int) -> None:
    rng = np.random.default_rng(0)
    for path in paths:
        with Image.open(path) as image:
            box = transforms.inception_box(image.height, image.width, rng)
            out = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)
            if rng.random() < 0.5:
                out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            np.asarray(out)


def ours_antialiased(paths: list[str], size: int) -> None:
    rng = np.random.default_rng(0)
    for path in paths:
        image = jpeg.open_image(path)
        box = transforms.inception_box(*image.shape[:2], rng)
        pixels, box = transforms._pixels_for(image, size, box)
        transforms.flip(transforms._resize(pixels, size, box), rng)


def before(paths: list[str], size: int) -> None:
    rng = np.random.default_rng(0)
    for path in paths:
        pixels = files.load_image(path)
        box = transforms.inception_box(*pixels.shape[:2], rng)
        transforms.flip(transforms._resize(pixels, size, box), rng)


def resize_us(paths: list[str], size: int, repeats: int) -> dict:
    """{resize: median microseconds per crop} over decoded `paths` and their inception boxes."""
    rng = np.random.default_rng(0)
    pixels = [files.load_image(p) for p in paths]
    boxes = [transforms.inception_box(*p.shape[:2], rng) for p in pixels]
    resizes = {"train": transforms.train_resize, "pil_antialiased": transforms._resize}
    times = {name: [] for name in resizes}
    for _ in range(repeats):
        for name, resize in resizes.items():
            started = time.process_time()
            for image, box in zip(pixels, boxes, strict=True):
                resize(image, size, box)
            times[name].append(1e6 * (time.process_time() - started) / len(pixels))
    return {name: round(statistics.median(ts), 1) for name, ts in times.items()}


def tf_chains(size: int) -> dict:
    """{"tf_data": run(paths), "tf_function": run(paths)} if TensorFlow imports, else {}."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
    except ImportError:
        return {}
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    def chain(path, antialias=False):
        raw = tf.io.read_file(path)
        begin, crop, _ = tf.image.sample_distorted_bounding_box(
            tf.image.extract_jpeg_shape(raw),
            tf.zeros([0, 0, 4]),
            area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
        image = tf.image.decode_and_crop_jpeg(raw, window, channels=3)
        image = tf.image.resize(image, (size, size), antialias=antialias)
        image = tf.image.random_flip_left_right(image)
        return tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    per_image = tf.function(chain)
    per_image_antialias = tf.function(lambda path: chain(path, antialias=True))

    def run_data(paths):
        for _ in tf.data.Dataset.from_tensor_slices(paths).map(chain).with_options(options):
            pass

    def run_function(paths):
        for path in paths:
            per_image(tf.constant(path)).numpy()

    def run_function_antialias(paths):
        for path in paths:
            per_image_antialias(tf.constant(path)).numpy()

    return {
        "tf_data": run_data,
        "tf_function": run_function,
        "tf_antialias": run_function_antialias,
    }


def per_core(paths: list[str], size: int, repeats: int) -> tuple[dict, dict]:
    """({chain: [img/s of wall time]}, {chain: [img per CPU second]}), `repeats` passes of
    each chain, the chains taking turns. On one pinned core the process's CPU time counts
    only this work (TensorFlow's threads included), not the time other programs hold the
    core, so it is the steadier figure on a shared machine."""
    chains = {
        "ours": lambda p: ours(p, size),
        "ours_antialiased": lambda p: ours_antialiased(p, size),
        "before": lambda p: before(p, size),
        "decoded": lambda p: decoded(p, size),
        "pil": lambda p: pil(p, size),
    }
    chains.update(tf_chains(size))
    for run in chains.values():
        run(paths[:16])  # warm-up: imports, tf.function tracing, file cache
    wall, cpu = {name: [] for name in chains}, {name: [] for name in chains}
    for _ in range(repeats):
        for name, run in chains.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            run(paths)
            wall[name].append(len(paths) / (time.perf_counter() - started))
            cpu[name].append(len(paths) / (time.process_time() - started_cpu))
    return wall, cpu


@dataclasses.dataclass(frozen=True)
class FileSource(Sequence):
    """(path, label) pairs as a source: `jpeg.open_image` (lazy) or `files.load_image`."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    lazy: bool

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        image = jpeg.open_image(path) if self.lazy else files.load_image(path)
        return {"image": image, "label": self.labels[index]}


def pipeline_img_per_s(source: Sequence, workers: int) -> float:
    batches = data.train_batches(
        source,
        data.TrainTransform(_SIZE.value, crop="inception", flip=True),
        global_batch_size=_BATCH.value,
        seed=0,
        worker_count=workers,
    )
    # Start-up: threads, each worker's first batch, and the prefetch buffers filled once.
    for _ in range(2 * workers + 2):
        next(batches)
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
            width, height = map(int, _SYNTHETIC.value.split("x"))
            write_synthetic_jpegs(root, _NUM.value, width=width, height=height)
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(root)
            for name in names
            if name.lower().endswith((".jpg", ".jpeg", ".png"))
        )
        class_names = sorted({os.path.dirname(p) for p in paths})
        labels = tuple(class_names.index(os.path.dirname(p)) for p in paths)
        all_cpus = os.sched_getaffinity(0)
        core = _CORE.value if _CORE.value >= 0 else max(all_cpus)
        # Pinned before TensorFlow starts its threads, which then stay on this core too.
        os.sched_setaffinity(0, {core})
        wall, cpu = per_core(paths, _SIZE.value, _REPEATS.value)
        resize = resize_us(paths[:64], _SIZE.value, _REPEATS.value)
        os.sched_setaffinity(0, all_cpus)
        pipeline = {}
        for workers in map(int, _WORKERS.value):
            # Both sources back to back at each worker count, the load changing less between.
            for lazy in (True, False):
                source = FileSource(tuple(paths), labels, lazy)
                key = f"{'ours' if lazy else 'decoded'}_workers_{workers}"
                pipeline[key] = round(pipeline_img_per_s(source, workers), 1)
        mean_kb = np.mean([os.path.getsize(p) for p in paths]) / 1024
    ours_per_core = statistics.median(cpu["ours"])
    workers = int(_WORKERS.value[0]) if _WORKERS.value else None
    result = {
        # The headline figures: ours, median over the passes, per CPU-second; the pipeline
        # with the first --workers value.
        "img_per_s_per_core": round(ours_per_core, 1),
        "pipeline_img_per_s": pipeline.get(f"ours_workers_{workers}"),
    }
    for kind, rates in (("cpu", cpu), ("wall", wall)):
        result[f"per_core_{kind}"] = {name: [round(r, 1) for r in rs] for name, rs in rates.items()}
        # tf_antialias resamples like ours (antialiased) but is not TensorFlow's default.
        tf_names = [name for name in rates if name in ("tf_data", "tf_function")]
        if tf_names:
            # Pass by pass, against the faster TensorFlow chain of the same pass.
            fastest = [max(ps) for ps in zip(*(rates[n] for n in tf_names), strict=True)]
            result[f"ours_over_tf_{kind}"] = [
                round(o / t, 2) for o, t in zip(rates["ours"], fastest, strict=True)
            ]
        if "tf_antialias" in rates:
            result[f"ours_over_tf_antialias_{kind}"] = [
                round(o / t, 2) for o, t in zip(rates["ours"], rates["tf_antialias"], strict=True)
            ]
        for other in ("pil", "before"):
            result[f"ours_over_{other}_{kind}"] = [
                round(o / p, 2) for o, p in zip(rates["ours"], rates[other], strict=True)
            ]
    result.update(
        resize_us=resize,
        pipeline_by_workers=pipeline,
        machine_cores=len(all_cpus),
        cores_to_feed=round(_FEED.value / ours_per_core, 1),
        feed_img_per_s=_FEED.value,
        image_size=_SIZE.value,
        images=len(paths),
        mean_jpeg_kb=round(float(mean_kb), 1),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
