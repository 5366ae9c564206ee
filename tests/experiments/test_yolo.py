"""YOLO through the shared loop at tiny settings: a thin end-to-end YOLO26 trains on mosaics of the
shapes, logs its three loss terms, evaluates (COCO metrics of letterboxed images), resumes
exactly; its Predictor maps the NMS-free detections back to each image's own pixels, and its
bundle predicts as the workdir."""

import functools
import os
import shutil
from typing import ClassVar

import numpy as np
import pytest
import requests
from PIL import Image

from experiments import detection
from jaxvision.evaluation.coco import STAT_NAMES
from jaxvision.models import detection as detectors
from jaxvision.models.detection.yolo import _V26_STAGES, YOLO26
from jaxvision.predictor import Predictor
from tests.experiments.helpers import (
    TINY_SHAPES,
    load_config,
    png_base64,
    read_metrics,
    serve_in_thread,
    without_timings,
)


class TinyYOLO26(YOLO26):
    """YOLO26 with one plain C2f block in each stage but its last (the attention stage):
    YOLO26's SPPF, C2PSA, reg_max 1 and end-to-end head on a fraction of the layers (the full
    network's parity is tests/models/test_yolo_model.py's)."""

    stages: ClassVar[tuple] = (*((c, 1, "c2f", s, e) for c, _, _, s, e in _V26_STAGES[:-1]),
                               _V26_STAGES[-1])  # fmt: skip


TINY_MODEL = "tiny_yolo26_for_tests"


@pytest.fixture(scope="module", autouse=True)
def tiny_model_registered():
    """TinyYOLO26 in the detector registry while this module's tests run (the run's model.json
    names it, and the Predictor and the bundle build it by that name), out of it for the rest
    of the session (the registry's every detector has weights, for instance)."""
    tiny = functools.partial(TinyYOLO26, depth=0.25, width=0.125, max_channels=1024)
    detectors.DETECTORS.register(TINY_MODEL, tiny)
    yield
    detectors.DETECTORS.unregister(TINY_MODEL)


# The thin YOLO26 above (channels at 1/8) on a 32-px canvas (the shapes' 64-px images
# letterboxed to it; maps 4, 2 and 1: 21 anchor points), 4 images a step: every part of the
# loop, the loss and the end-to-end head, at a fraction of the n scale's compile and step time.
TINY = {
    **TINY_SHAPES,
    "model": TINY_MODEL,
    "image_size": 32,
    "batch_size": 4,
    "detection": {"score_thresh": 0.0, "detections_per_img": 20},
    "yolo_augment_options": {"close_mosaic_epochs": 0},
}


def _config(**overrides):
    return load_config("detection/yolo11n_shapes.py", **{**TINY, **overrides})


@pytest.fixture(scope="module")
def trained(session_cache):
    folder, final = session_cache.get(
        "shapes_tiny_yolo26_run",
        lambda folder: detection.train_and_evaluate(_config(), f"{folder}/run"),
    )
    return f"{folder}/run", final


@pytest.mark.slow
def test_yolo_run_logs_its_terms_evaluates_and_resumes_exactly(trained, tmp_path):
    workdir, final = trained
    assert final["step"] == 4
    assert {f"eval/{name}" for name in STAT_NAMES} <= set(final)
    records = read_metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == [2, 4]
    assert {"train/box_loss", "train/cls_loss", "train/dfl_loss"} <= set(train[0])
    assert all(np.isfinite(r["train/loss"]) and r["train/loss"] > 0 for r in train)

    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "4"))
    again = detection.train_and_evaluate(_config(), copy)
    assert {k: v for k, v in again.items() if k != "elapsed_s"} == {
        k: v for k, v in final.items() if k != "elapsed_s"
    }
    assert without_timings(read_metrics(copy)) == without_timings(records)


@pytest.mark.slow
def test_end_to_end_predictions_map_back_and_the_bundle_predicts_the_same(trained, tmp_path):
    from jaxvision import bundle
    from jaxvision.serving.app import create_app

    workdir, _ = trained
    predictor = Predictor.from_workdir(workdir, max_batch=2)
    assert predictor.record["letterbox"] is True
    source = detection.open_dataset(_config()).test
    images = [source[i]["image"] for i in range(2)]
    images[1] = np.asarray(Image.fromarray(images[1]).resize((96, 48)))  # a wide image
    out = predictor.predict(images)
    # The one-to-one head's top detections, no NMS: a fixed 20 rows, scores best first.
    assert out["boxes"].shape == (2, 20, 4) and out["valid"].all()
    assert (np.diff(out["scores"], axis=1) <= 0).all()
    assert set(np.unique(out["classes"])) <= set(range(1, 6))
    # Boxes in each image's own pixels, inside it: the letterbox's offset is taken off.
    wide = out["boxes"][1]
    assert wide[:, [0, 2]].max() <= 96 and wide[:, [1, 3]].max() <= 48 and wide.min() >= 0

    path = str(tmp_path / "bundle")
    bundle.write(predictor, path, platforms=("cpu",), source={"step": predictor.step})
    exported = bundle.load(path)
    got = exported.predict(images)
    for key in out:
        np.testing.assert_array_equal(got[key], out[key], err_msg=key)

    # Served: the bundle's detections over HTTP, in each image's pixels.
    url, stop = serve_in_thread(create_app(exported, exported.metadata))
    try:
        body = {"images": [png_base64(image) for image in images]}
        answer = requests.post(f"{url}/v1/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        names = exported.class_names
        for row, boxes, scores, classes in zip(
            answer.json()["predictions"], got["boxes"], got["scores"], got["classes"], strict=True
        ):
            found = row["detections"]
            assert len(found) == 20
            np.testing.assert_allclose([d["box"] for d in found], boxes, rtol=1e-6)
            np.testing.assert_allclose([d["score"] for d in found], scores, rtol=1e-6)
            assert [d["class"] for d in found] == [names[c] for c in classes]
    finally:
        stop()


def test_letterboxed_boxes_map_back_to_the_image_and_are_clipped_to_it():
    from jaxvision.tasks.detection import DetectionKind

    kind, record = DetectionKind(), {"image_size": 64, "letterbox": True}
    image = np.zeros((48, 96, 3), np.uint8)  # to 32 x 64 on the canvas, from row 16
    inputs, placed = kind.preprocess(record, [image])
    assert inputs["images"].shape == (1, 64, 64, 3)
    assert (inputs["images"][0, :16] == 114).all() and (inputs["images"][0, 16:48] == 0).all()
    canvas_boxes = np.array([[[8.0, 20.0, 40.0, 44.0], [-4.0, 10.0, 70.0, 50.0]]], np.float32)
    out = kind.outputs(record, {"boxes": canvas_boxes}, placed)
    # (x - left) / sx, (y - top) / sy with sx = sy = 2 / 3, top 16, left 0; then clipped.
    np.testing.assert_allclose(out["boxes"][0, 0], [12.0, 6.0, 60.0, 42.0], rtol=1e-6)
    np.testing.assert_allclose(out["boxes"][0, 1], [0.0, 0.0, 96.0, 48.0], rtol=1e-6)
