"""Detector inference speed: jaxvision's predict (network + post-processing, jitted) against
torchvision's model in eval mode, on the same input size, in one process.

  python -m benchmarks.detection \\
      [--model=retinanet_resnet50_fpn|fcos_resnet50_fpn|fasterrcnn_resnet50_fpn] \\
      [--height=800 --width=1088] [--batch=1] [--repeats=5] [--torch=auto]
  python -m benchmarks.detection --model=retinanet_resnet18_fpn_small \\
      --model_kwargs='{"width": 32, "head_norm": "group"}' --height=128 --width=128 \\
      --batch=32 --torch=no                               # the shapes recipe's detector
  python -m benchmarks.detection --model=retinanet_resnet18_fpn_small \\
      --model_kwargs='{"width": 32, "head_norm": "group"}' --height=128 --width=128 \\
      --batch=1 --torch=no --cpu_compile=xla,eigen        # one row per CPU compile choice

Both models have random weights (91 classes). The input is a batch of random images already at
(height, width), a multiple of 32, so torchvision's transform (shorter side 800, longer at most
1333) leaves their size alone and both run the network at the same resolution; torchvision's
time includes its normalisation and its per-image post-processing, ours the same on the device.
Scores are random, so post-processing keeps its maximum (detections_per_img) from the
candidates above the threshold: both do their full work. Prints one row per implementation
(median of --repeats after a warm-up call that compiles) and the ratio torch / ours.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import import_torch, median_seconds
from jaxvision import cpu_compile
from jaxvision.models import detection as detectors
from jaxvision.tasks.detection import FAMILIES
from jaxvision.train.state import ModelState

_MODEL = flags.DEFINE_string("model", "retinanet_resnet50_fpn", "A jaxvision detector name.")
_HEIGHT = flags.DEFINE_integer("height", 800, "Input height (a multiple of 32).")
_WIDTH = flags.DEFINE_integer("width", 1088, "Input width (a multiple of 32).")
_BATCH = flags.DEFINE_integer("batch", 1, "Images per call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls (the median is reported).")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "Also time torchvision.")
_KWARGS = flags.DEFINE_string(
    "model_kwargs", "{}", "Model options as JSON, e.g. '{\"width\": 32}'."
)
_CHOICES = flags.DEFINE_list(
    "cpu_compile", ["xla"], "Our rows: one per jaxvision.cpu_compile choice (on a CPU)."
)
_NUM_CLASSES = 91
# The detectors torchvision has under the same name (at their default options).
_TORCHVISION_PEERS = ("retinanet_resnet50_fpn", "fcos_resnet50_fpn", "fasterrcnn_resnet50_fpn")


def ours(images: np.ndarray, choice: str = cpu_compile.DEFAULT):
    """A callable running jaxvision's detector and post-processing on `images` [B, H, W, 3],
    compiled with jaxvision.cpu_compile choice `choice`."""
    from jaxvision.tasks.detection import Detection, Levelled

    model = detectors.build(_MODEL.value, num_classes=_NUM_CLASSES, **json.loads(_KWARGS.value))
    how = FAMILIES[model.family]
    if not isinstance(how, Levelled):
        raise SystemExit("--model must be a RetinaNet, FCOS or Faster R-CNN: SSD runs at its size")
    # The task places anchors on a square canvas; this benchmark's input is (H, W): build the
    # task for the longer side and the anchors for the input's own grid (Faster R-CNN places
    # its own, on the input itself).
    task = Detection(model, canvas=max(images.shape[1:3]))
    anchors, levels = how.anchors(model, images.shape[1:3])
    sizes = jnp.asarray([images.shape[1:3]] * len(images), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *images.shape[1:])))

    def predict(variables, images):
        state = {"model": ModelState(variables, opt_state=None, step=0, rng=None)}
        outputs = task.head_outputs(state, images, sizes)
        return how.postprocess(outputs, anchors, levels, sizes, task.options)

    device_images = jnp.asarray(images)
    jitted = jax.jit(predict, compiler_options=cpu_compile.options(choice))
    return lambda: jax.block_until_ready(jitted(variables, device_images))


def theirs(torch, images: np.ndarray):
    from torchvision.models import detection as tvd

    if _MODEL.value not in _TORCHVISION_PEERS:
        return None
    build = getattr(tvd, _MODEL.value)
    model = build(weights=None, weights_backbone=None, num_classes=_NUM_CLASSES)
    model.eval()
    tensors = [torch.from_numpy(i).permute(2, 0, 1).float() / 255.0 for i in images]

    def run():
        with torch.no_grad():
            model(tensors)

    return run


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    shape = (_BATCH.value, _HEIGHT.value, _WIDTH.value, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    rows = [("jaxvision", median_seconds(ours(images, _CHOICES.value[0]), _REPEATS.value))]
    for choice in _CHOICES.value[1:]:
        rows.append((f"jaxvision[{choice}]", median_seconds(ours(images, choice), _REPEATS.value)))
    imported = import_torch(_TORCH.value)
    if imported is not None:
        torch, torchvision = imported
        run = theirs(torch, images)
        if run is not None:
            rows.append(
                (f"torchvision {torchvision.__version__}", median_seconds(run, _REPEATS.value))
            )
    print(f"{_MODEL.value}, batch {_BATCH.value} at {_HEIGHT.value}x{_WIDTH.value}, CPU:")
    for name, seconds in rows:
        print(f"  {name:<24} {seconds * 1e3:9.1f} ms  {_BATCH.value / seconds:8.2f} img/s")
    result = {"model": _MODEL.value, "batch": _BATCH.value, "ms": {n: s * 1e3 for n, s in rows}}
    if rows[-1][0].startswith("torchvision"):
        result["torch_over_ours"] = rows[-1][1] / rows[0][1]
        print(f"  torch / ours: {result['torch_over_ours']:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
