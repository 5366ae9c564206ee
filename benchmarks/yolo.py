"""YOLO predict latency: jaxvision's jitted predict beside the reference's torch model on the
same weights, in one process, and ONNX Runtime on that model's ONNX export.

  python -m benchmarks.yolo [--models=yolo11n,yolo11s,yolo26n,yolo26s] [--batches=1,8] \\
      [--size=640] [--seconds=8] [--torch=auto] [--onnx=auto] [--outputs=end_to_end,nms]
  python -m benchmarks.yolo --models=yolo26n --outputs=end_to_end --batches=2 --size=64 \\
      --seconds=0 --torch=no --model_kwargs='{"width": 0.125}'   # a smoke run

Each model gets random weights (80 classes, the reference's nc); the torch model (the
reference's DetectionModel built from the YAML inside its package, no download) loads them
through `jaxvision.weights.export_weights`, and the benchmark first checks that both give the
same raw head outputs. The input is a batch of random uint8 canvases of --size (what the
letterbox makes); every implementation's time includes scaling to [0, 1] and, for the NMS
rows, decoding and NMS at the reference's validation settings (score 0.001, IoU 0.7, 300
detections per image; with random weights plus noise on every parameter, scores spread over
(0, 1) and the share above 0.001 is printed as `above_threshold`):
- "ours": the task's jitted predict. NMS rows: the 1,000 best (point, class) pairs enter NMS
  (`candidates`). End-to-end rows (YOLO26): the one-to-one head's top 300, no NMS.
- "torch": the reference model in eval mode under `torch.inference_mode`, then its own
  `non_max_suppression` (every box above the score threshold enters, at most 30,000), or, end to
  end, its head's own top-300 output.
- "onnxruntime": the torch model's ONNX export (the network; NMS as torch's) in an
  onnxruntime session with its default threads.
Times are the median over --seconds of back-to-back calls after warm-up calls, with the 10th-90th
percentile spread; one JSON line per row and the ratios torch / ours and onnxruntime / ours.
Needs torch and ultralytics importable beside jaxvision for the peers (--torch=no: ours alone).
"""

import functools
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import timed
from jaxvision import weights
from jaxvision.models import detection as detectors
from jaxvision.tasks.yolo import YOLODetection, YOLOOptions
from jaxvision.train.state import ModelState

_MODELS = flags.DEFINE_list("models", ["yolo11n", "yolo11s", "yolo26n", "yolo26s"], "YOLO names.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
_OUTPUTS = flags.DEFINE_list(
    "outputs", ["end_to_end", "nms"], "For end-to-end models (YOLO26): which outputs to time."
)
_SIZE = flags.DEFINE_integer("size", 640, "The square canvas (a multiple of 32).")
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Timed seconds per row (at least 3 calls).")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "Time the torch model.")
_ONNX = flags.DEFINE_enum("onnx", "auto", ["auto", "yes", "no"], "Time onnxruntime.")
_KWARGS = flags.DEFINE_string(
    "model_kwargs", "{}", "Our model's options as JSON (a smaller model; --torch=no only)."
)
_NUM_CLASSES = 81  # the reference's 80, plus the background jaxvision counts
_SCORE, _IOU, _MAX_DET = 0.001, 0.7, 300


def ours(name: str, end_to_end: bool):
    """(variables, predict(images) -> detections, task) for `name` with random weights."""
    model = detectors.build(name, num_classes=_NUM_CLASSES, **json.loads(_KWARGS.value))
    options = YOLOOptions(
        score_thresh=_SCORE,
        nms_thresh=_IOU,
        detections_per_img=_MAX_DET,
        end_to_end=end_to_end,
    )
    task = YOLODetection(model, canvas=_SIZE.value, options=options)
    example = jnp.zeros((1, _SIZE.value, _SIZE.value, 3))
    variables = jax.jit(model.init)(jax.random.key(0), example)
    # The class towers' initial biases (the reference's prior, about -11) put every score near
    # 1e-5, under the threshold: NMS would have nothing to do. Noise on every parameter and the
    # class biases at 0 give scores around 0.5, so both sides do post-processing's full work.
    noise = jax.random.split(jax.random.key(1), len(jax.tree.leaves(variables["params"])))
    flat = {}
    for (path, x), k in zip(jax.tree.leaves_with_path(variables["params"]), noise, strict=True):
        name = "/".join(str(p.key) for p in path)
        zero = name.endswith("bias") and any(name.startswith(c) for c in model.class_outputs)
        flat[path] = jnp.zeros_like(x) if zero else x + 0.05 * jax.random.normal(k, x.shape)
    params = jax.tree.map_with_path(lambda path, _: flat[path], variables["params"])
    variables = {**variables, "params": params}

    @jax.jit
    def predict(variables, images):
        state = {"model": ModelState(variables, opt_state=None, step=0, rng=None)}
        return task.predict(state, images)

    return variables, predict, task


def run_ours(predict, variables, images):
    return jax.block_until_ready(predict(variables, images))


def torch_model(name: str, variables: dict):
    """The reference's model for `name` in eval mode, holding `variables`."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(f"{name}.yaml", verbose=False)
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v))
        for k, v in weights.export_weights(name, jax.device_get(variables)).items()
    }
    model.load_state_dict(state)
    return model.eval()


def check_same_weights(task, variables, model, images) -> tuple[float, float]:
    """(the largest |difference| between ours and the torch model's class scores (one-to-many
    branch, sigmoid) on `images`: float32 noise when the weights are the same; the share of
    scores above the score threshold)."""
    import torch

    state = {"model": ModelState(variables, opt_state=None, step=0, rng=None)}
    mine = jax.nn.sigmoid(jax.jit(task.head_outputs)(state, images)["cls_logits"])
    model.end2end = False
    with torch.inference_mode():
        out = model(torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float() / 255.0)
    theirs = out[0] if isinstance(out, tuple | list) else out
    theirs = theirs[:, 4:, :].permute(0, 2, 1).numpy()  # (B, 8400, 80) scores
    mine = np.asarray(mine)
    return float(np.abs(mine - theirs).max()), float((mine > _SCORE).mean())


def torch_predict(model, images: np.ndarray, end_to_end: bool):
    import torch
    from ultralytics.utils.nms import non_max_suppression

    model.end2end = end_to_end
    x = torch.from_numpy(images.copy())

    def run():
        with torch.inference_mode():
            preds = model(x.permute(0, 3, 1, 2).float() / 255.0)
            preds = preds[0] if isinstance(preds, tuple | list) else preds
            if end_to_end:
                return preds  # (B, 300, 6)
            return non_max_suppression(preds, _SCORE, _IOU, max_det=_MAX_DET)

    return run


def onnx_predict(model, images: np.ndarray, folder: str):
    """onnxruntime on the torch network's ONNX export (one-to-many output; `model` fresh from
    `torch_model`), then the reference's NMS; None when onnxruntime does not import."""
    try:
        import onnxruntime
    except ImportError:
        if _ONNX.value == "yes":
            raise
        return None
    import torch
    from ultralytics.utils.nms import non_max_suppression

    model.end2end = False
    path = os.path.join(folder, "model.onnx")
    example = torch.zeros((images.shape[0], 3, *images.shape[1:3]))
    with torch.no_grad():
        torch.onnx.export(
            model, example, path, input_names=["images"], dynamo=False, opset_version=17
        )
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run():
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), np.float32) / 255.0
        preds = session.run([output], {"images": x})[0]
        with torch.inference_mode():
            return non_max_suppression(torch.from_numpy(preds), _SCORE, _IOU, max_det=_MAX_DET)

    return run


def main(argv):
    del argv
    if json.loads(_KWARGS.value) and _TORCH.value != "no":
        raise app.UsageError("--model_kwargs changes our model alone: use it with --torch=no")
    use_torch = _TORCH.value != "no"
    if use_torch:
        try:
            import torch
        except ImportError:
            if _TORCH.value == "yes":
                raise
            use_torch = False
    rows = []
    print(f"YOLO predict at {_SIZE.value}x{_SIZE.value}, {os.cpu_count()} CPUs:")
    for name in _MODELS.value:
        modes = (False,)
        if getattr(detectors.DETECTORS.module_class(name), "end2end", False):
            modes = tuple(output == "end_to_end" for output in _OUTPUTS.value)
        for end_to_end in modes:
            variables, predict, task = ours(name, end_to_end)
            for batch in map(int, _BATCHES.value):
                images = np.random.default_rng(0).integers(
                    0, 256, (batch, _SIZE.value, _SIZE.value, 3), dtype=np.uint8
                )
                head = "end-to-end (no NMS)" if end_to_end else "NMS"
                case = {"model": name, "output": head, "batch": batch}
                device = jnp.asarray(images)
                runs = [("ours", functools.partial(run_ours, predict, variables, device))]
                if use_torch:
                    model = torch_model(name, variables)
                    diff, above = check_same_weights(task, variables, model, images[:1])
                    case["same_weights_max_score_diff"], case["above_threshold"] = diff, above
                    case["torch_threads"] = torch.get_num_threads()
                    runs.append(("torch", torch_predict(model, images, end_to_end)))
                    if _ONNX.value != "no" and not end_to_end:
                        folder = tempfile.mkdtemp()
                        run = onnx_predict(torch_model(name, variables), images, folder)
                        if run is not None:
                            runs.append(("onnxruntime", run))
                for who, run in runs:
                    case[who] = timed(run, _SECONDS.value)
                line = f"  {name:<8} {head:<20} batch {batch:>2}:"
                for who, _ in runs:
                    line += f"  {who} {case[who]['ms']:8.1f} ms"
                for who, _ in runs[1:]:
                    case[f"{who}_over_ours"] = case[who]["ms"] / case["ours"]["ms"]
                    line += f"  {who}/ours {case[f'{who}_over_ours']:.2f}"
                print(line, flush=True)
                rows.append(case)
    for case in rows:
        print(json.dumps(case))


if __name__ == "__main__":
    app.run(main)
