"""int8 quantization of a detector: a tiny shapes RetinaNet quantized in weights mode holds int8
kernels, predicts nearly the float model's detections, and its workdir evaluates (the 12 COCO
stats) and exports like any run."""

import flax
import jax
import numpy as np
import pytest

from jaxvision import bundle
from jaxvision.commands.quantize import quantize, table
from jaxvision.compress.detection import QuantizedDetection, agreement
from jaxvision.evaluation.coco import STAT_NAMES
from jaxvision.evaluation.workdirs import split_metrics, split_source
from jaxvision.predictor import Predictor

pytestmark = pytest.mark.slow  # every test here takes over ~10 s


@pytest.fixture(scope="module")
def quantized(shapes_detector_run, tmp_path_factory):
    """(float workdir, its final metrics, int8 workdir, the quantize report: agreement over
    every test detection). The float run is the session's tiny shapes RetinaNet
    (tests/conftest.py: 64 px, four steps, every box kept up to 20 per image)."""
    workdir, final = shapes_detector_run
    out = str(tmp_path_factory.mktemp("detector_int8") / "int8")
    return workdir, final, out, quantize(workdir, out, "weights", 1, speed_batch=0, min_score=0.0)


def test_int8_detector_stores_int8_kernels(quantized):
    workdir, _, out, report = quantized
    float_params = flax.traverse_util.flatten_dict(Predictor.from_workdir(workdir).variables)
    stored = Predictor.from_workdir(out)
    assert isinstance(stored.task, QuantizedDetection)
    flat = flax.traverse_util.flatten_dict(stored.variables)
    expected = 0  # int8 kernels + one float32 scale per output channel, the rest float32
    for path, leaf in float_params.items():
        if path[0] == "params" and path[-1] == "kernel":
            assert flat[(*path, "qvalue")].dtype == np.int8
            assert flat[(*path, "qvalue")].shape == leaf.shape
            assert flat[(*path, "scale")].shape == (*[1] * (leaf.ndim - 1), leaf.shape[-1])
            expected += leaf.size + 4 * leaf.shape[-1]
        else:
            assert flat[path].dtype == np.float32 and flat[path].shape == leaf.shape
            expected += 4 * leaf.size
    assert report["weight_bytes_int8"] == expected
    assert report["weight_bytes_float"] / report["weight_bytes_int8"] > 3.5


def test_int8_detections_follow_the_float_ones(quantized):
    _, final, _, report = quantized
    # The float AP is the loop's own evaluation of the run; int8 rounding moves it little.
    assert report["ap_float"] == pytest.approx(final["eval/AP"], abs=1e-6)
    assert abs(report["ap50_int8"] - report["ap50_float"]) <= 0.05
    # Every float detection of the 16 test images (20 each: score_thresh 0) has an int8 one
    # of its class at IoU >= 0.9, nearly all of them.
    close = report["detection_agreement"]
    assert close["detections"] == 320 and close["min_score"] == 0.0
    assert close["matched"] >= 0.9 and close["other_unmatched"] <= 0.1
    assert 0 < close["max_score_diff"] < 0.05
    assert "COCO AP (test)" in table(report)


def test_int8_workdir_evaluates_and_exports(quantized, tmp_path):
    workdir, _, out, report = quantized
    predictor = Predictor.from_workdir(out, max_batch=1)
    source, batch_size = split_source(out, "test")
    metrics, _ = split_metrics(predictor, predictor.variables, source, batch_size, "eval")
    assert list(metrics) == [f"eval/{name}" for name in STAT_NAMES]
    assert metrics == pytest.approx({f"eval/{k}": v for k, v in report["coco_int8"].items()})

    path = str(tmp_path / "bundle")
    bundle.write(predictor, path, platforms=("cpu",), source={"workdir": out, "step": 0})
    loaded = bundle.load(path)
    dtypes = {x.dtype for x in jax.tree.leaves(loaded.variables)}
    assert dtypes == {np.dtype(np.int8), np.dtype(np.float32)}
    images = [source[i]["image"] for i in range(3)]
    expected, got = predictor.predict(images), loaded.predict(images)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # The int8 Predictor's detections in the images' pixels: those of the float one, nearly.
    reference = Predictor.from_workdir(workdir, max_batch=1).predict(images)
    per_image = lambda d: [  # noqa: E731
        {k: d[k][i][d["valid"][i]] for k in ("boxes", "scores", "classes")} for i in range(3)
    ]
    close = agreement(per_image(reference), per_image(expected), iou=0.9, min_score=0.0)
    assert close["detections"] == 60 and close["matched"] >= 0.9
    assert close["max_score_diff"] < 0.05 and close["max_box_diff_px"] < 3.0
