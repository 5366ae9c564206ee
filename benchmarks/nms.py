"""NMS speed: jaxvision.ops.nms / batched_nms (jitted) against torchvision's, on random boxes.

  python -m benchmarks.nms [--sizes=1000,5000,20000] [--classes=80] \\
      [--max_outputs=all,300] [--repeats=10] [--torch=auto]

For each N and each max_output ("all": N, the whole kept set, as torchvision returns it) it
times nms and batched_nms on the same boxes (in a 1000 x 1000 image, sides 10-200 px, uniform
scores, IoU threshold 0.5; --classes random classes for batched_nms): the median of --repeats
runs after a warm-up run that compiles. Where torch and torchvision import (or --torch=yes),
torchvision.ops.nms / batched_nms run in the same process on the same boxes, and the row also
holds their median, the ratio torch / ours and whether the kept sets agree. Prints a table, one
row per case, and one JSON line per row.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import import_torch, median_seconds
from jaxvision.ops.nms import batched_nms, nms

_SIZES = flags.DEFINE_list("sizes", ["1000", "5000", "20000"], "Numbers of boxes.")
_CLASSES = flags.DEFINE_integer("classes", 80, "Classes for batched_nms.")
_MAX_OUTPUTS = flags.DEFINE_list("max_outputs", ["all", "300"], "max_output values; all: N.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per case (the median is reported).")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "Also time torchvision.")
_THRESHOLD = 0.5


def random_boxes(n: int, classes: int, seed: int = 0):
    """float32 boxes [n, 4] xyxy, scores [n], int32 classes [n]."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1000, (n, 2))
    wh = rng.uniform(10, 200, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    return boxes, scores, rng.integers(0, classes, n).astype(np.int32)


def _torch_call(torchvision, torch, op, boxes, scores, labels):
    tb, ts, tc = (torch.from_numpy(x) for x in (boxes, scores, labels))
    if op == "nms":
        return lambda: torchvision.ops.nms(tb, ts, _THRESHOLD)
    return lambda: torchvision.ops.batched_nms(tb, ts, tc, _THRESHOLD)


def _our_call(op, max_output, boxes, scores, labels):
    args = [jnp.asarray(x) for x in (boxes, scores, labels)]
    if op == "nms":
        fn = jax.jit(lambda b, s, c: nms(b, s, _THRESHOLD, max_output))
    else:
        fn = jax.jit(lambda b, s, c: batched_nms(b, s, c, _THRESHOLD, max_output))
    return lambda: jax.block_until_ready(fn(*args))


def benchmark_rows(sizes, classes, max_outputs, repeats, torch_mode="auto"):
    """One dict per (op, N, max_output): our median ms, and torchvision's where available."""
    torch_modules = import_torch(torch_mode)
    rows = []
    for n in sizes:
        boxes, scores, labels = random_boxes(n, classes)
        for op in ("nms", "batched_nms"):
            if torch_modules is not None:
                torch, torchvision = torch_modules
                call = _torch_call(torchvision, torch, op, boxes, scores, labels)
                reference = call().numpy()
                torch_s = median_seconds(call, repeats)
            for max_output in max_outputs:
                limit = n if max_output == "all" else int(max_output)
                call = _our_call(op, limit, boxes, scores, labels)
                ours_s = median_seconds(call, repeats)
                indices, kept = call()
                ours = np.asarray(indices)[np.asarray(kept)]
                row = {
                    "op": op,
                    "n": n,
                    "classes": classes if op == "batched_nms" else 1,
                    "max_output": limit,
                    "kept": len(ours),
                    "ours_ms": round(ours_s * 1e3, 3),
                    "backend": jax.default_backend(),
                }
                if torch_modules is not None:
                    row["torch_ms"] = round(torch_s * 1e3, 3)
                    row["torch_over_ours"] = round(torch_s / ours_s, 3)
                    row["same_kept"] = set(ours.tolist()) == set(reference[:limit].tolist())
                rows.append(row)
    return rows


def main(argv):
    del argv
    sizes = [int(s) for s in _SIZES.value]
    rows = benchmark_rows(sizes, _CLASSES.value, _MAX_OUTPUTS.value, _REPEATS.value, _TORCH.value)
    header = f"{'op':<12}{'N':>7}{'classes':>8}{'max_out':>8}{'kept':>7}{'ours ms':>10}"
    header += f"{'torch ms':>10}{'torch/ours':>11}{'same':>6}"
    print(header)
    for r in rows:
        line = f"{r['op']:<12}{r['n']:>7}{r['classes']:>8}{r['max_output']:>8}{r['kept']:>7}"
        line += f"{r['ours_ms']:>10.2f}"
        if "torch_ms" in r:
            line += f"{r['torch_ms']:>10.2f}{r['torch_over_ours']:>11.2f}{str(r['same_kept']):>6}"
        print(line)
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    app.run(main)
