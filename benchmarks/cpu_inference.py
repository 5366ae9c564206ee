"""CPU inference latency of a served classifier: jaxvision's jitted forward, its Predictor and
an exported bundle, beside torchvision's eager model and ONNX Runtime on that model's ONNX
export, in one process on the same CPU.

  python -m benchmarks.cpu_inference [--models=resnet50,vit_b16] [--batches=1,4,16] \\
      [--dtypes=float32,bfloat16,int8-weights,int8-weights+activations] \\
      [--paths=forward,predictor,bundle] [--choices=xla,ynnpack-dots,eigen] \\
      [--seconds=8] [--torch=auto] [--onnx=auto]
  python -m benchmarks.cpu_inference --models=resnet50 --dtypes=float32 --batches=1 \\
      --paths=forward --profile=12 --torch=no --onnx=no          # where the time goes
  python -m benchmarks.cpu_inference --models=simple_cnn --image_size=16 --num_classes=10 \\
      --batches=1,2 --seconds=0 --torch=no --onnx=no                     # a smoke run

Every model has random weights. Ours, per dtype (float32; bfloat16 compute; int8 kernels with
float activations, `weights`; int8 kernels and activations with calibrated static scales,
`weights+activations`: jaxvision.compress.quantize):
- "forward": the Predictor's jitted program (uint8 images of the model's size in, its
  normalisation, the network and the softmax) on a batch already on the device, once per
  jaxvision.cpu_compile choice in --choices;
- "predictor": `Predictor.predict` on uint8 images of 1.25x the model's size, as a service
  gets them: resize and centre crop on the host, padding to the batch bucket, the copy back;
- "bundle": the same through the model's exported bundle (`jaxvision.bundle.load`).
The forward and bundle rows of the first choice in --choices use the Predictor's choice
(XLA's defaults unless --choices says otherwise).
Peers (float32 and bfloat16): torchvision's model in eval mode under `torch.inference_mode`
with torch's default threads, on a float batch already normalised (its preprocessing not
counted: in our favour for torch); and ONNX Runtime (float32) on that model's ONNX export with
its default threads. Times are medians over --seconds of back-to-back calls after warm-up calls,
with the 10th-90th percentile spread and the threads kept busy (CPU time over wall time); each
row's JSON line, then the ratios torch / ours. --profile=N traces 5 calls of each forward row at
batch 1 (jax.profiler, XLA's per-op trace events) and prints the N ops that take longest per
call and the time each thread spent in ops.
"""

import collections
import glob
import gzip
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks.timing import import_torch, timed
from jaxvision import bundle, cpu_compile
from jaxvision.compress.quantize import Scheme, calibrate
from jaxvision.predictor import Predictor

_MODELS = flags.DEFINE_list("models", ["resnet50", "vit_b16"], "Zoo classifiers.")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "16"], "Batch sizes.")
_DTYPES = flags.DEFINE_list(
    "dtypes",
    ["float32", "bfloat16", "int8-weights", "int8-weights+activations"],
    "float32, bfloat16, int8-weights, int8-weights+activations.",
)
_PATHS = flags.DEFINE_list("paths", ["forward", "predictor", "bundle"], "Our paths to time.")
_CHOICES = flags.DEFINE_list(
    "choices", list(cpu_compile.CHOICES), "jaxvision.cpu_compile choices for the forward rows."
)
_SECONDS = flags.DEFINE_float("seconds", 8.0, "Timed seconds per row (at least 3 calls).")
_IMAGE = flags.DEFINE_integer("image_size", 224, "The model's input size.")
_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classifier size.")
_PROFILE = flags.DEFINE_integer(
    "profile", 0, "Print the N ops that take longest in each forward row at batch 1 (0: none)."
)
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "yes", "no"], "Time torchvision's model.")
_ONNX = flags.DEFINE_enum("onnx", "auto", ["auto", "yes", "no"], "Time ONNX Runtime.")

# Our zoo name -> torchvision's builder.
TORCHVISION = {"resnet50": "resnet50", "resnet18": "resnet18", "vit_b16": "vit_b_16"}
_INT8 = {"int8-weights": "weights", "int8-weights+activations": "weights+activations"}


def our_predictor(name: str, dtype: str, max_batch: int) -> Predictor:
    """A Predictor of zoo model `name` with random weights, computing in `dtype`."""
    size = _IMAGE.value
    base = Predictor.random(name, image_size=size, num_classes=_CLASSES.value, max_batch=max_batch)
    if dtype == "float32":
        return base
    if dtype == "bfloat16":
        return Predictor({**base.record, "dtype": "bfloat16"}, base.variables, max_batch=max_batch)
    mode = _INT8[dtype]
    scheme = Scheme.of(base.task.model, mode, (size, size, base.record["channels"]))
    variables = jax.device_get(base.variables)
    scales = None
    if mode != "weights":
        batches = [jax.random.normal(jax.random.key(i), (4, size, size, 3)) for i in range(2)]
        scales = calibrate(scheme, variables, batches)
    record = {**base.record, "quantization": {"mode": mode, "qtype": "int8"}}
    return Predictor(record, scheme.quantize(variables, scales), max_batch=max_batch)


def our_rows(predictor: Predictor, exported, batch: int) -> list[tuple[str, object]]:
    """(row name, callable) for each of --paths and --choices; exported: the predictor's
    loaded bundle (or None)."""
    size = _IMAGE.value
    rng = np.random.default_rng(0)
    inputs = {"images": jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), np.uint8))}
    served = list(rng.integers(0, 256, (batch, size * 5 // 4, size * 5 // 4, 3), np.uint8))
    runs = []
    if "forward" in _PATHS.value:
        for choice in _CHOICES.value:
            forward = predictor.compiled_forward(choice)

            def run(forward=forward):
                jax.block_until_ready(forward(predictor.variables, inputs))

            runs.append((f"forward[{choice}]", run))
    predictor.compile_with(_CHOICES.value[0])
    if "predictor" in _PATHS.value:
        runs.append(("predictor", lambda: predictor.predict(served)))
    if exported is not None:
        runs.append(("bundle", lambda: exported.predict(served)))
    return runs


def profile(predictor: Predictor, choice: str, top: int, folder: str) -> None:
    """Prints the `top` ops that take longest per call of the batch-1 forward compiled with
    `choice`, and each thread's time in ops, from a jax.profiler trace of 5 calls."""
    options = {**(cpu_compile.options(choice) or {}), "xla_cpu_enable_xprof_traceme": True}
    forward = jax.jit(predictor._predict_batch, compiler_options=options)
    size = _IMAGE.value
    inputs = {"images": jnp.zeros((1, size, size, 3), jnp.uint8)}
    for _ in range(3):
        jax.block_until_ready(forward(predictor.variables, inputs))
    out = tempfile.mkdtemp(dir=folder)
    with jax.profiler.trace(out, create_perfetto_trace=True):
        for _ in range(5):
            jax.block_until_ready(forward(predictor.variables, inputs))
    (path,) = glob.glob(os.path.join(out, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    ops = [e for e in events if not e["name"].startswith(("ThunkExecutor", "$", "Pjit"))]
    per_op, per_thread = collections.Counter(), collections.Counter()
    for e in ops:
        per_op[e["name"]] += e["dur"] / 5e3
        per_thread[e["tid"]] += e["dur"] / 5e3
    busy = ", ".join(f"{ms:.1f}" for ms in sorted(per_thread.values(), reverse=True))
    print(f"    profile [{choice}]: ms in ops per call, per thread: {busy}")
    for name, ms in per_op.most_common(top):
        print(f"      {ms:8.2f} ms  {name}")


def torch_rows(name: str, dtype: str, batch: int, folder: str) -> list[tuple[str, object]]:
    """torch eager (and ONNX Runtime for float32) on torchvision's `name`, or []."""
    found = import_torch(_TORCH.value) if name in TORCHVISION else None
    if found is None or dtype not in ("float32", "bfloat16"):
        return []
    torch, torchvision = found
    model = getattr(torchvision.models, TORCHVISION[name])(num_classes=_CLASSES.value).eval()
    size = _IMAGE.value
    x = torch.randn(batch, 3, size, size)
    if dtype == "bfloat16":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)

    def run_torch():
        with torch.inference_mode():
            model(x).softmax(-1)

    runs = [("torch", run_torch)]
    if dtype == "float32" and _ONNX.value != "no":
        try:
            import onnxruntime
        except ImportError:
            if _ONNX.value == "yes":
                raise
            return runs
        path = os.path.join(folder, f"{name}-{batch}.onnx")
        try:
            with torch.no_grad():
                torch.onnx.export(model, x, path, input_names=["images"], dynamo=False)
        except Exception as e:  # an op the exporter does not know: no row, and why
            if _ONNX.value == "yes":
                raise
            print(f"  onnxruntime: no row, the ONNX export failed ({type(e).__name__})")
            return runs
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {"images": x.numpy()}
        runs.append(("onnxruntime", lambda: session.run(None, feed)))
    return runs


def main(argv):
    del argv
    unknown = set(_DTYPES.value) - {"float32", "bfloat16", *_INT8}
    if unknown or not set(_CHOICES.value) <= set(cpu_compile.CHOICES):
        raise app.UsageError(f"unknown --dtypes {sorted(unknown)} or --choices {_CHOICES.value}")
    batches = [int(b) for b in _BATCHES.value]
    found = import_torch(_TORCH.value)
    threads = {"cpus": os.cpu_count(), "torch": found[0].get_num_threads() if found else None}
    print(f"CPU inference on {cpu_compile.cpu_name()}, threads {threads}:", flush=True)
    folder = tempfile.mkdtemp()
    for name in _MODELS.value:
        for dtype in _DTYPES.value:
            predictor = our_predictor(name, dtype, max(batches))
            if _PROFILE.value and "forward" in _PATHS.value:
                print(f"  {name} {dtype} batch 1:", flush=True)
                for choice in _CHOICES.value:
                    profile(predictor, choice, _PROFILE.value, folder)
            exported = None
            if "bundle" in _PATHS.value:
                out = os.path.join(folder, f"bundle-{name}-{dtype}")
                bundle.write(predictor, out, platforms=("cpu",), source={})
                exported = bundle.load(out)
                exported.compile_with(_CHOICES.value[0])
            for batch in batches:
                runs = our_rows(predictor, exported, batch) + torch_rows(name, dtype, batch, folder)
                case = {"model": name, "dtype": dtype, "batch": batch, "threads": threads}
                line = f"  {name} {dtype} batch {batch}:"
                for who, run in runs:
                    case[who] = timed(run, _SECONDS.value)
                    line += f"  {who} {case[who]['ms']:.1f} ms"
                first = f"forward[{_CHOICES.value[0]}]"
                for peer in ("torch", "onnxruntime"):
                    ours = [k for k in case if k.startswith("forward[")]
                    if peer in case and ours:
                        best = min(ours, key=lambda k: case[k]["ms"])
                        case[f"{peer}_over_{first}"] = case[peer]["ms"] / case[first]["ms"]
                        case[f"{peer}_over_best_forward"] = case[peer]["ms"] / case[best]["ms"]
                        line += f"  {peer}/ours {case[f'{peer}_over_best_forward']:.2f} ({best})"
                print(line, flush=True)
                print(json.dumps(case), flush=True)


if __name__ == "__main__":
    app.run(main)
