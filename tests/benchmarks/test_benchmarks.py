"""The benchmark commands run on CPU at tiny sizes and print their JSON figures."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.experiments.helpers import ROOT, devices, python_env

# The GPU machines the throughput benchmark runs on have jax, flax, optax, absl, numpy and
# matplotlib, but no TensorFlow, TFDS, ml_collections or grain: it must run without them.
GPU_MACHINE_LACKS = ("tensorflow", "tensorflow_datasets", "ml_collections", "grain", "tensorboardX")
RUN_WITHOUT = """
import importlib.abc, runpy, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {missing}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
{prelude}
sys.argv = [{module!r}, *sys.argv[1:]]
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""
# Two-block ViTs registered in the benchmark's process: the command's every row and field at a
# fraction of the compile time of the 12-block ViTs it is meant for. WIDE_VIT: 25 M parameters
# (about 0.28 GiB of float32 state and AdamW moments, so FSDP's halving shows at 0.01 GiB);
# NARROW_VIT: 0.9 M.
VITS = """
import functools
from jaxvision import models
from jaxvision.models.vit import ViT
models.MODELS.register("wide_vit", functools.partial(
    ViT, patch_size=16, width=1024, depth=2, mlp_dim=4096, num_heads=4))
models.MODELS.register("narrow_vit", functools.partial(
    ViT, patch_size=16, width=192, depth=2, mlp_dim=768, num_heads=3))
"""


def _rows(module, *args, without=(), env=None, prelude=""):
    launch = ["-m", module]
    if without:
        code = RUN_WITHOUT.format(missing=set(without), module=module, prelude=prelude)
        launch = ["-c", code]
    result = subprocess.run(
        [sys.executable, *launch, *args],
        cwd=ROOT,
        env=python_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_train_throughput_row():
    (row,) = _rows(
        "benchmarks.throughput",
        # The Quickstart CNN: every field of the row, at a fraction of a ResNet's compile time.
        "--model=simple_cnn",
        "--batch_size=4",
        "--image_size=32",
        "--steps=2",
        "--warmup=1",
        without=GPU_MACHINE_LACKS,
    )
    assert row["model"] == "simple_cnn" and row["mode"] == "train" and row["batch_size"] == 4
    assert row["params"] == 1_325_224  # at 32 px with 1,000 classes
    assert row["img_per_s"] > 0 and row["step_ms"] > 0
    # XLA's count for a training step: ~3x the forward FLOPs of 4 images at 32 px (5.2e7: the
    # convolutions 4.1e7, the dense layers 1.0e7).
    assert 1e8 < row["flops_per_step"] < 3e8
    # Without remat on one device the device runs the model's step; XLA's rewrites of the
    # compiled program are all that separates the two counts (at 4 images: 6% with jax 0.10.2;
    # a ResNet-18's 11% with 0.7.0; remat's recomputed forward pass would add ~33%).
    assert abs(row["hardware_flops_per_step"] / row["flops_per_step"] - 1) < 0.2
    assert row["mfu"] is None and row["hfu"] is None  # no peak figure for a CPU
    assert row["tensorflow_loaded"] is False
    assert {"peak_memory_gib", "xla_flags", "compile_s", "devices"} <= set(row)
    # The launcher's GPU flag default is in force, and reported.
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in row["xla_flags"]


@pytest.mark.slow
def test_inference_sweep_and_plot(tmp_path):
    plot = tmp_path / "sweep.png"
    rows = _rows(
        "benchmarks.throughput",
        "--model=narrow_vit",
        "--mode=infer",
        "--image_size=32",
        "--sweep=2,4",
        "--steps=2",
        "--warmup=1",
        f"--plot={plot}",
        "--attention=xla",
        without=GPU_MACHINE_LACKS,
        prelude=VITS,
    )
    assert [(r["batch_size"], r["mode"]) for r in rows] == [(2, "infer"), (4, "infer")]
    assert rows[0]["attention"] == "xla"
    # Forward FLOPs grow with the batch.
    assert rows[1]["flops_per_step"] > 1.9 * rows[0]["flops_per_step"]
    with Image.open(plot) as image:
        assert image.size[0] > 300 and image.size[1] > 200


@pytest.mark.slow
def test_largest_model_that_fits_with_fsdp_and_remat():
    """The scale benchmark's form on 2 simulated devices: FSDP over both, remat, two ViTs."""
    rows = _rows(
        "benchmarks.throughput",
        "--model=wide_vit,narrow_vit",
        "--batch_size=2",
        "--image_size=16",
        "--mesh=(('fsdp',-1),)",
        "--sharding=fsdp",
        "--remat",
        "--steps=1",
        "--warmup=0",
        env=devices(2),
        without=GPU_MACHINE_LACKS,
        prelude=VITS,
    )
    *measured, summary = rows
    assert [r["model"] for r in measured] == ["wide_vit", "narrow_vit"]
    assert all(r["mesh"] == {"fsdp": 2} and r["remat"] for r in measured)
    # The row records the XLA flags it ran with: the given ones, with jaxvision's defaults (the
    # suite's flags carry them already, tests/conftest.py: nothing is added twice).
    given = devices(2)["XLA_FLAGS"]  # the suite's flags and the device count
    assert measured[0]["xla_flags"] == given
    assert given.count("--xla_gpu_enable_latency_hiding_scheduler=true") == 1
    assert given.endswith("--xla_force_host_platform_device_count=2")
    # FSDP: each device holds about half of the state (small arrays stay whole).
    full = 12 * measured[0]["params"] / 2**30
    assert 0.45 * full < measured[0]["state_memory_gib"] < 0.6 * full
    # Largest by parameters, not the last one measured.
    assert summary["largest_that_fits"] == "wide_vit" and summary["params"] == measured[0]["params"]
    # Remat recomputes each block's forward pass: the devices run more FLOPs than the model
    # needs (a training step is ~3 forward passes; remat adds up to one more).
    ratio = measured[0]["hardware_flops_per_step"] / measured[0]["flops_per_step"]
    assert 1.1 < ratio < 1.6, ratio


@pytest.mark.slow
def test_compile_only_plans_memory_without_running():
    rows = _rows(
        "benchmarks.throughput",
        "--model=wide_vit,simple_cnn",
        "--batch_size=8",
        "--image_size=16",
        "--compile_only",
        without=GPU_MACHINE_LACKS,
        prelude=VITS,
    )
    # Nothing was allocated, so no line claims that a model fits.
    assert [r.get("model") for r in rows] == ["wide_vit", "simple_cnn"]
    row = rows[0]
    assert row["img_per_s"] is None and row["peak_memory_gib"] is None
    # The state is float32 parameters and two AdamW moments; the step also holds gradients.
    assert abs(row["state_memory_gib"] - 12 * row["params"] / 2**30) < 0.01
    assert row["planned_memory_gib"] >= 16 * row["params"] / 2**30
    assert row["flops_per_step"] > 0


@pytest.mark.slow
def test_input_pipeline_throughput():
    (row,) = _rows(
        "benchmarks.input_throughput",
        "--num_images=16",
        "--batch_size=8",
        "--steps=1",
        "--feed_img_per_s=1000",
    )
    assert row["images"] == 16 and row["image_size"] == 224
    assert row["img_per_s_per_core"] > 0 and row["pipeline_img_per_s"] > 0
    assert abs(row["cores_to_feed"] - 1000 / row["img_per_s_per_core"]) < 0.1
    assert 10 < row["mean_jpeg_kb"] < 200  # photo-like JPEGs, not flat colour


def test_missing_module_guard_works():
    """The guard above really hides a module: a command that needs one fails."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = RUN_WITHOUT.format(missing={"ml_collections"}, module="experiments.train", prelude="")
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "No module named 'ml_collections'" in result.stderr
