"""The YOLO latency benchmark's smoke run: a thin YOLO26n's end-to-end output, without torch."""

import json

import pytest

from tests.experiments.helpers import run_module


@pytest.mark.slow
def test_yolo_benchmark_prints_its_rows():
    result = run_module(
        "benchmarks.yolo",
        "--models=yolo26n",
        "--outputs=end_to_end",
        "--batches=1,2",
        "--size=64",
        "--seconds=0",
        "--torch=no",
        '--model_kwargs={"width": 0.125}',
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["model"], r["output"], r["batch"]) for r in rows] == [
        ("yolo26n", "end-to-end (no NMS)", 1),
        ("yolo26n", "end-to-end (no NMS)", 2),
    ]
    for row in rows:
        assert row["ours"]["calls"] >= 3 and 0 < row["ours"]["p10"] <= row["ours"]["p90"]
        assert row["ours"]["p10"] <= row["ours"]["ms"] <= row["ours"]["p90"]
        assert "torch" not in row
    assert "YOLO predict at 64x64" in result.stdout
    # The peers need the reference's weights: a smaller model of ours is refused beside them.
    refused = run_module("benchmarks.yolo", "--torch=yes", '--model_kwargs={"width": 0.5}')
    assert refused.returncode != 0
    assert "--model_kwargs changes our model alone" in refused.stderr
