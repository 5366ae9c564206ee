"""RoIAlign speed: jaxvision.ops.multiscale_roi_align (jitted, forward + backward to the maps)
against torchvision's MultiScaleRoIAlign, on the same random maps and boxes, in one process.

  python -m benchmarks.roi_align [--image=512] [--batch=2] [--rois=512] \\
      [--channels=256] [--repeats=5] [--torch=auto]

The maps are an FPN's P2..P5 of a --image square (strides 4 ... 32, --channels each), the
boxes --rois per image, sides 16 px to the image side, anywhere in it: Faster R-CNN's box head
input (7 x 7 bins, 2 x 2 samples per bin, torchvision's canonical level mapping). Each
implementation pools, then takes the gradient of sum(pooled * u) for a fixed random u with
respect to the maps (what training does); the median of --repeats after a warm-up call.
Where torch and torchvision import (or --torch=yes), their row and the ratio torch / ours
follow, and the largest difference of the pooled values.
"""

import json
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import import_torch, median_seconds
from jaxvision.ops.roi_align import multiscale_roi_align

_IMAGE = flags.DEFINE_integer("image", 512, "Image side (a multiple of 32).")
_BATCH = flags.DEFINE_integer("batch", 2, "Images.")
_ROIS = flags.DEFINE_integer("rois", 512, "Boxes per image.")
_CHANNELS = flags.DEFINE_integer("channels", 256, "Channels of every map.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs (the median is reported).")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "Also time torchvision.")


def inputs(rng):
    side, b, c = _IMAGE.value, _BATCH.value, _CHANNELS.value
    maps = [
        rng.normal(size=(b, side // s, side // s, c)).astype(np.float32) for s in (4, 8, 16, 32)
    ]
    wh = rng.uniform(16, side, (b, _ROIS.value, 2))
    xy = rng.uniform(0, 1, (b, _ROIS.value, 2)) * (side - wh)
    boxes = np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)
    upstream = rng.normal(size=(b, _ROIS.value, 7, 7, c)).astype(np.float32)
    return maps, boxes, upstream


def ours(maps, boxes, upstream):
    side = _IMAGE.value

    @jax.jit
    def step(maps):
        pooled, vjp = jax.vjp(lambda m: multiscale_roi_align(m, boxes, (side, side)), maps)
        return pooled, vjp(upstream)[0]

    device_maps = [jnp.asarray(m) for m in maps]
    return step, lambda: jax.block_until_ready(step(device_maps))


def theirs(torch, maps, boxes, upstream):
    from torchvision.ops import MultiScaleRoIAlign

    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    xs = [torch.from_numpy(m.transpose(0, 3, 1, 2).copy()).requires_grad_(True) for m in maps]
    rois = [torch.from_numpy(b) for b in boxes]
    u = torch.from_numpy(upstream.transpose(0, 1, 4, 2, 3).reshape(-1, _CHANNELS.value, 7, 7))
    side = _IMAGE.value

    def run():
        named = OrderedDict((str(i), x) for i, x in enumerate(xs))
        pooled = pool(named, rois, [(side, side)] * _BATCH.value)
        torch.autograd.grad((pooled * u).sum(), xs)
        return pooled

    return run


def main(argv):
    del argv
    maps, boxes, upstream = inputs(np.random.default_rng(0))
    step, run_ours = ours(maps, boxes, upstream)
    rows = [("jaxvision", median_seconds(run_ours, _REPEATS.value))]
    result = {"image": _IMAGE.value, "batch": _BATCH.value, "rois": _ROIS.value}
    imported = import_torch(_TORCH.value)
    if imported is not None:
        torch, torchvision = imported
        run = theirs(torch, maps, boxes, upstream)
        rows.append((f"torchvision {torchvision.__version__}", median_seconds(run, _REPEATS.value)))
        theirs_pooled = run().detach().numpy().reshape(_BATCH.value, _ROIS.value, -1, 7, 7)
        ours_pooled = np.asarray(step([jnp.asarray(m) for m in maps])[0]).transpose(0, 1, 4, 2, 3)
        result["max_abs_diff"] = float(np.abs(ours_pooled - theirs_pooled).max())
    print(
        f"RoIAlign forward + backward, {_BATCH.value} x {_ROIS.value} boxes on P2-P5 of "
        f"{_IMAGE.value} px ({_CHANNELS.value} channels), CPU:"
    )
    for name, seconds in rows:
        print(f"  {name:<24} {seconds * 1e3:9.1f} ms")
    result["ms"] = {n: s * 1e3 for n, s in rows}
    if len(rows) == 2:
        result["torch_over_ours"] = rows[1][1] / rows[0][1]
        print(f"  torch / ours: {result['torch_over_ours']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
