"""Serving speed: the raw Predictor per batch bucket, then a real server (jaxvision serve on
localhost) at several client concurrencies, with batching and with max_batch_size=1.

  python -m benchmarks.serve --workdir=DIR [--requests=256] [--concurrency=1,8,32] \\
      [--max_batch_size=32] [--max_delay_ms=5]
  python -m benchmarks.serve --model=resnet50 --image_size=224 --requests=64

On a CPU the raw rows and the server use the same jaxvision.cpu_compile choice: --cpu_compile's,
or (auto) the one the Predictor times as fastest, which the server is then given.
With --model the model has random weights (ImageNet's 1,000 classes and normalisation) and is
exported to a bundle in a temporary directory, which the server loads.

Each request carries one PNG of the model's input size. Client threads run on the same machine
as the server, so on a small CPU they take some of its time: the server's figures are a lower
bound. Prints one row per case and a JSON line per row: raw img/s per bucket; for the server
throughput (requests/s = img/s), p50 / p99 latency, errors and wrong answers (against the
Predictor's own top-1).
"""

import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks.timing import median_seconds
from jaxvision import cli, cpu_compile
from jaxvision.predictor import Predictor

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_MODEL = flags.DEFINE_string("model", None, "Or a zoo model with random weights.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "With --model: its input size.")
_REQUESTS = flags.DEFINE_integer("requests", 256, "Requests per server case.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "8", "32"], "Client threads per case.")
_MAX_BATCH = flags.DEFINE_integer("max_batch_size", 32, "The server's batch limit.")
_MAX_DELAY = flags.DEFINE_float("max_delay_ms", 5.0, "The server's batching delay.")
_CPU_COMPILE = flags.DEFINE_enum(
    "cpu_compile",
    "auto",
    ["auto", *cpu_compile.CHOICES],
    "On a CPU: the compile choice of the raw rows and the server (auto: timed, as serve does).",
)
_PORT = flags.DEFINE_integer("port", 8765, "Local port for the server under test (0: a free one).")


def raw_rows(predictor: Predictor, images: list[np.ndarray], repeats: int = 5) -> list[dict]:
    rows = []
    for bucket in predictor.buckets():
        seconds = median_seconds(lambda b=bucket: predictor.predict(images[:b]), repeats)
        rows.append(
            {"case": "raw", "batch": bucket, "ms": seconds * 1e3, "img_s": bucket / seconds}
        )
    return rows


def random_predictor(name: str, image_size: int, max_batch: int) -> Predictor:
    """A zoo classifier with random weights, as a workdir's Predictor would hold it."""
    return Predictor.random(name, image_size=image_size, max_batch=max_batch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(max_batch_size: int, source: str, choice: str):
    import requests

    port = _PORT.value or _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jaxvision", "serve", source,
            f"--port={port}", f"--max_batch_size={max_batch_size}",
            f"--max_delay_ms={_MAX_DELAY.value}", f"--queue_size={4 * _REQUESTS.value}",
            f"--cpu_compile={choice}",
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    cli.fail("the server under test did not become ready")


def server_rows(pngs, expected, max_batch_size: int, source: str, choice: str) -> list[dict]:
    import requests

    process, url = _serve(max_batch_size, source, choice)
    rows = []
    try:
        session_per_thread = {}

        def one(i):
            session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
            start = time.perf_counter()
            answer = session.post(
                f"{url}/v1/predict?top_k=1",
                files=[("image", ("x.png", pngs[i % len(pngs)], "image/png"))],
                timeout=120,
            )
            seconds = time.perf_counter() - start
            ok = answer.status_code == 200
            right = ok and answer.json()["predictions"][0]["labels"][0]["index"] == int(
                expected[i % len(pngs)]
            )
            return seconds, ok, right

        for concurrency in (int(c) for c in _CONCURRENCY.value):
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(2 * concurrency)))  # warm connections
                start = time.perf_counter()
                results = list(pool.map(one, range(_REQUESTS.value)))
                wall = time.perf_counter() - start
            latencies = np.array([r[0] for r in results]) * 1e3
            rows.append(
                {
                    "case": f"server max_batch_size={max_batch_size}",
                    "concurrency": concurrency,
                    "img_s": len(results) / wall,
                    "p50_ms": float(np.percentile(latencies, 50)),
                    "p99_ms": float(np.percentile(latencies, 99)),
                    "errors": sum(not r[1] for r in results),
                    "wrong": sum(r[1] and not r[2] for r in results),
                }
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rows


def main(argv):
    if len(argv) > 1 or bool(_WORKDIR.value) == bool(_MODEL.value):
        cli.fail("give --workdir=DIR (a training run) or --model=NAME, and no other arguments")
    if _WORKDIR.value:
        predictor = Predictor.from_workdir(_WORKDIR.value, max_batch=_MAX_BATCH.value)
        source = f"--workdir={_WORKDIR.value}"
    else:
        from jaxvision import bundle

        predictor = random_predictor(_MODEL.value, _IMAGE_SIZE.value, _MAX_BATCH.value)
        path = tempfile.mkdtemp(prefix="serve_bench_")
        bundle.write(predictor, path, platforms=("cpu",), source={"model": _MODEL.value})
        source = f"--bundle={path}"
    choice = _CPU_COMPILE.value
    if cpu_compile.applies():
        if choice == "auto":
            found = predictor.choose_compile()
            print(f"compile choice on {found['cpu']}: {found['chosen']} (one image: {found['ms']})")
        else:
            predictor.compile_with(choice)
        choice = predictor.compile_choice  # the server takes the same, without timing again
    size, channels = predictor.image_size, predictor.record["channels"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, channels), np.uint8) for _ in range(64)]
    expected = predictor.predict(images)["probs"].argmax(-1)
    pngs = []
    for image in images:
        out = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if channels == 1 else image).save(out, "PNG")
        pngs.append(out.getvalue())
    rows = raw_rows(predictor, (images * 2)[: predictor.max_batch])
    for max_batch_size in (_MAX_BATCH.value, 1):
        rows += server_rows(pngs, expected, max_batch_size, source, choice)
    for row in rows:
        if row["case"] == "raw":
            print(f"raw predictor   batch {row['batch']:4d}  {row['img_s']:9.1f} img/s  "
                  f"{row['ms']:8.2f} ms")  # fmt: skip
        else:
            print(f"{row['case']:<28} concurrency {row['concurrency']:3d}  {row['img_s']:8.1f} "
                  f"img/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                  f"errors {row['errors']}  wrong {row['wrong']}")  # fmt: skip
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    sys.exit(app.run(main, flags_parser=cli.parse_flags))
