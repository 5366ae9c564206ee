"""jaxvision.weights.ultralytics: Ultralytics YOLO state dicts in and out, no torch needed.

The state dicts here are our own export of a fresh model: tests/models/test_yolo_model.py
checks that its names and shapes are the reference's (a digest the fixture script took from
ultralytics' DetectionModel), so these tests exercise the reference's layout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.weights import ultralytics
from jaxvision.weights.common import flatten


@functools.cache
def fresh(name: str, num_classes: int = 81) -> dict:
    """Zeros shaped like the model's variables (traced, not run)."""
    model = detection.build(name, num_classes=num_classes)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def reference_file(name: str, num_classes: int = 81, seed: int = 0) -> dict:
    """A reference-style state dict: random floats, num_batches_tracked, DFL's arange."""
    rng = np.random.default_rng(seed)
    tensors = weights.export_weights(name, fresh(name, num_classes))
    return {
        k: v if v.dtype == np.int64 or "dfl" in k else rng.normal(size=v.shape).astype(np.float32)
        for k, v in tensors.items()
    }


@pytest.mark.parametrize("name", ["yolov8n", "yolo26n"])
def test_round_trip_is_exact(name):
    tensors = reference_file(name)
    back = ultralytics.to_torch(name, ultralytics.to_flax(name, tensors))
    assert back.keys() == tensors.keys()
    for key, value in tensors.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
        assert back[key].dtype == value.dtype, key


def test_reference_names_map_by_rule():
    tensors = reference_file("yolo26n")
    assert "model.23.dfl.conv.weight" not in tensors  # reg_max 1: no DFL
    flat = ultralytics.to_flax("yolo26n", tensors)
    w = tensors["model.22.m.0.1.attn.qkv.conv.weight"]  # C3k2's Sequential(Bottleneck, PSA)
    np.testing.assert_array_equal(
        flat[("params", "model_22", "m_0_1", "attn", "qkv", "conv", "kernel")],
        w.transpose(2, 3, 1, 0),
    )
    mean = tensors["model.23.one2one_cv3.2.0.0.bn.running_mean"]
    np.testing.assert_array_equal(
        flat[("batch_stats", "model_23", "one2one_cv3_2_0_0", "bn", "mean")], mean
    )
    v8 = reference_file("yolov8n")
    np.testing.assert_array_equal(v8["model.22.dfl.conv.weight"].ravel(), np.arange(16))
    assert ultralytics.module_to_flax("model.2.m.0.cv1.conv") == ("model_2", "m_0", "cv1", "conv")
    assert (
        ultralytics.module_to_torch(("model_23", "one2one_cv2_1_2")) == "model.23.one2one_cv2.1.2"
    )


def test_load_weights_imports_a_safetensors_file(tmp_path):
    tensors = reference_file("yolo11n")
    path = str(tmp_path / "yolo11n.safetensors")
    weights.save_safetensors(path, tensors)
    variables, kept = weights.load_weights(path, "yolo11n", fresh("yolo11n"))
    assert kept == []
    flat = flatten(variables)
    np.testing.assert_array_equal(
        flat[("params", "model_0", "conv", "kernel")],
        tensors["model.0.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        flat[("batch_stats", "model_23", "cv2_0_0", "bn", "var")],
        tensors["model.23.cv2.0.0.bn.running_var"],
    )
    with pytest.raises(UserError, match="pickled PyTorch file"):
        weights.load_weights(str(tmp_path / "yolo11n.pt"), "yolo11n", fresh("yolo11n"))


@pytest.mark.slow
def test_other_class_count_keeps_the_class_towers_fresh():
    # yolov8n's class towers are max(64, min(nc, 100)) wide: 80 for COCO, 64 for 3 classes, so
    # the whole towers (and their BatchNorm statistics) stay fresh; everything else imports.
    tensors = reference_file("yolov8n")
    target = fresh("yolov8n", num_classes=4)
    variables, kept = weights.import_weights("yolov8n", tensors, target)
    assert kept and all("/model_22/cv3_" in f"/{k}" for k in kept)
    assert "batch_stats/model_22/cv3_0_0/bn/mean" in kept
    assert "params/model_22/cv3_2_2/kernel" in kept
    flat = flatten(variables)
    np.testing.assert_array_equal(
        flat[("params", "model_22", "cv2_1_2", "bias")], tensors["model.22.cv2.1.2.bias"]
    )
    # new_head: the class towers are fresh whatever the shapes.
    _, kept = weights.import_weights("yolov8n", tensors, fresh("yolov8n"), new_head=True)
    # per level: two conv + BatchNorm modules (kernel, scale, bias; mean, var), the output conv
    assert len(kept) == 3 * (2 * (3 + 2) + 2)
    # yolo11s at 3 classes: the towers are 128 wide either way, only the output convs differ.
    _, kept = weights.import_weights(
        "yolo11s", reference_file("yolo11s"), fresh("yolo11s", num_classes=4)
    )
    assert kept == [
        f"params/model_23/cv3_{i}_2/{leaf}" for i in range(3) for leaf in ("bias", "kernel")
    ]


def test_errors_say_what_is_wrong():
    tensors = reference_file("yolo11n")
    target = fresh("yolo11n")
    missing = {k: v for k, v in tensors.items() if not k.startswith("model.10.")}
    with pytest.raises(UserError, match=r"does not fit the model: missing \['batch_stats/model_10"):
        weights.import_weights("yolo11n", missing, target)
    extra = {**tensors, "model.24.conv.weight": np.zeros((4, 4, 1, 1), np.float32)}
    with pytest.raises(UserError, match=r"unexpected \['params/model_24/conv/kernel'\]"):
        weights.import_weights("yolo11n", extra, target)
    with pytest.raises(UserError, match="does not fit the model"):  # a YOLO26 file for YOLO11
        weights.import_weights("yolo11n", reference_file("yolo26n"), target)
    odd = {**tensors, "model.0.conv.alpha": np.zeros(3, np.float32)}
    with pytest.raises(UserError, match=r"unexpected tensor model.0.conv.alpha \(3,\) for yolo11n"):
        weights.import_weights("yolo11n", odd, target)
    dfl = {**tensors, "model.23.dfl.conv.weight": np.ones((1, 16, 1, 1), np.float32)}
    with pytest.raises(UserError, match=r"model.23.dfl.conv.weight is not 0..15"):
        weights.import_weights("yolo11n", dfl, target)
    with pytest.raises(UserError, match="no Ultralytics YOLO converter for model 'resnet18'"):
        ultralytics.to_flax("resnet18", tensors)
    assert {"yolov8n", "yolo11x", "yolo26m"} <= set(weights.importable_models())
