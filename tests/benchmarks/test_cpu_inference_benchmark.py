"""The CPU inference benchmark's smoke run: a tiny classifier through every dtype, path and
compile choice, without the peers."""

import json

import pytest

from jaxvision import cpu_compile
from tests.experiments.helpers import run_module


@pytest.mark.slow
def test_cpu_inference_benchmark_prints_every_row():
    result = run_module(
        "benchmarks.cpu_inference",
        "--models=simple_cnn",
        "--image_size=16",
        "--num_classes=10",
        "--batches=1,2",
        "--seconds=0",
        "--torch=no",
        "--onnx=no",
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    dtypes = ["float32", "bfloat16", "int8-weights", "int8-weights+activations"]
    assert [(r["dtype"], r["batch"]) for r in rows] == [(d, b) for d in dtypes for b in (1, 2)]
    paths = [f"forward[{c}]" for c in cpu_compile.CHOICES] + ["predictor", "bundle"]
    for row in rows:
        assert row["threads"]["cpus"] >= 1 and row["threads"]["torch"] is None
        for path in paths:
            timing = row[path]
            assert timing["calls"] >= 3 and 0 < timing["p10"] <= timing["ms"] <= timing["p90"]
        assert "torch" not in row and "onnxruntime" not in row
    assert f"CPU inference on {cpu_compile.cpu_name()}" in result.stdout
    refused = run_module("benchmarks.cpu_inference", "--dtypes=int4", "--torch=no")
    assert refused.returncode != 0 and "unknown --dtypes ['int4']" in refused.stderr
