"""The served models the serving tests share (a classifier and a detector): one of each per
test session and worker."""

import pytest

from experiments import detection
from experiments.classification import train_and_evaluate
from tests.experiments.helpers import TINY_SHAPES, load_config, run_tool
from tests.serving.helpers import serve

TINY = dict(image_size=8, pad=1, total_steps=20, log_every_steps=10, checkpoint_every_steps=0)
# Two steps of the tests' tiny shapes RetinaNet, five detections per image.
TINY_DETECTOR = {
    **TINY_SHAPES,
    "detection": {"score_thresh": 0.0, "detections_per_img": 5},
    "total_steps": 2,
    "checkpoint_every_steps": 0,
}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """(base url, bundle path): a tiny digits run, exported with buckets 1-8 and served with
    small limits the bad-input tests cross."""
    root = tmp_path_factory.mktemp("serve")
    workdir, out = str(root / "run"), str(root / "bundle")
    train_and_evaluate(load_config("classification/simple_cnn_digits.py", **TINY), workdir)
    run_tool("export", f"--workdir={workdir}", f"--out={out}", "--max_batch=8", check=True)
    flags = ["--max_batch_size=8", "--max_delay_ms=30", "--max_images=4"]
    flags += ["--max_body_mb=0.25", "--max_pixels=250000"]
    process, url = serve(out, *flags)
    yield url, out
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="session")
def detector_server(tmp_path_factory):
    """(base url, bundle path, shapes config): a tiny shapes RetinaNet, exported with buckets
    1-2 and served."""
    root = tmp_path_factory.mktemp("serve_detector")
    workdir, out = str(root / "run"), str(root / "bundle")
    config = load_config("detection/retinanet_shapes.py", **TINY_DETECTOR)
    detection.train_and_evaluate(config, workdir)
    run_tool("export", f"--workdir={workdir}", f"--out={out}", "--max_batch=2", check=True)
    process, url = serve(out, "--max_batch_size=2")
    yield url, out, config
    process.terminate()
    process.wait(timeout=20)
