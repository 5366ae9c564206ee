"""How inference programs are compiled for a CPU: XLA's own choice and the alternatives worth
trying, each with the reason it is here, and the pick among them for the CPU a process runs on,
by timing the model itself there.

XLA's CPU backend hands a convolution or a matrix product to one of several kernel
libraries: YNNPACK (by default it takes every convolution and dot product, fused with the
elementwise work around them: BatchNorm's scale and shift, activations, residual adds) or XLA's
own emitted loops and Eigen's contractions. Which is fastest depends on the CPU (its vector
width, its caches, how many cores a batch-1 convolution keeps busy) and on the model's shapes,
and differs between machines of the same cloud kind. So each choice below stays a compile
option of the same jitted program (the model stays a JAX program; exported bundles do not
change), and the service times them at start-up on its own CPU (`fastest`) rather than
trusting a table.

Every choice computes the same function; results differ by float reordering only (the tests
compare each with the default at float32 tolerances).
"""

import platform
import statistics
import time

import jax

# Measured on a quiet 2-core AMD EPYC VM, 2026-12-07, `python -m benchmarks.cpu_inference` and
# `benchmarks.yolo` (one image, random weights, median ms; docs/results/performance.md):
#   ResNet-50 float32     xla 150   ynnpack-dots  87   eigen  84   (torch eager 112)
#   ResNet-50 int8 w+a    xla 130   ynnpack-dots 3,723 eigen 3,733
#   ViT-B/16 float32      xla 340   ynnpack-dots 504   eigen 403   (torch eager 328)
#   YOLO11n 640 with NMS  xla 216   ynnpack-dots 181   eigen 170   (torch eager 627)
# No choice wins everywhere, hence the timing at start-up.
CHOICES = {
    # XLA's defaults: convolutions and products through YNNPACK, each fused with the
    # elementwise work around it. Fastest for transformers and for int8 activations (YNNPACK
    # runs the int8 convolutions that XLA's own loops take 29x longer over); on ResNet-50 the
    # 7x7 stem convolution alone took 41 of its 150 ms (`benchmarks.cpu_inference --profile`).
    "xla": {},
    # YNNPACK for the dot products alone (with their fused elementwise work); convolutions in
    # XLA's emitted code and Eigen's contractions.
    "ynnpack-dots": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    # No YNNPACK: XLA's emitted code and Eigen's contractions (threaded over the runtime's
    # intra-op pool) for every convolution and product. Fastest for float32 CNNs here.
    "eigen": {"xla_cpu_experimental_ynn_fusion_type": ""},
}
DEFAULT = "xla"
# A choice replaces XLA's default only when its median time is at least this much lower: the
# start-up timing is short, and a near tie is noise, not a reason to leave the default.
MIN_GAIN = 0.05


def options(name: str) -> dict | None:
    """The compiler_options of `jax.jit` for choice `name` (None: XLA's defaults)."""
    return CHOICES[name] or None


def cpu_name() -> str:
    """The CPU's model name as the OS reports it ("AMD EPYC", "Intel(R) Xeon(R) ..."), or the
    architecture when it does not."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def applies() -> bool:
    """Whether the choice means anything here: the default backend is the CPU."""
    return jax.default_backend() == "cpu"


def fastest(run_with, names=tuple(CHOICES), rounds: int = 7) -> dict:
    """Times `run_with(name)` (a callable that runs the model once, compiled with choice `name`,
    and blocks until done) for every name, in interleaved rounds after one untimed call each
    (compilation). Returns {"chosen": name, "ms": {name: median ms}, "cpu": cpu_name()}: the
    fastest, unless it beats DEFAULT by less than MIN_GAIN (then DEFAULT)."""
    calls = {}
    for name in names:
        run_with(name)  # compiles
        calls[name] = []
    for _ in range(rounds):
        for name in names:
            start = time.perf_counter()
            run_with(name)
            calls[name].append(time.perf_counter() - start)
    ms = {name: round(1e3 * statistics.median(times), 2) for name, times in calls.items()}
    best = min(ms, key=ms.get)
    if DEFAULT in ms and ms[best] > (1 - MIN_GAIN) * ms[DEFAULT]:
        best = DEFAULT
    return {"chosen": best, "ms": ms, "cpu": cpu_name()}
