"""int8 quantization: qwix's rounding against a hand computation, the storage round trip,
agreement with the float model on the digits test set, int8 bundles and QAT."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import requests

from jaxvision import bundle, config_checks
from jaxvision.commands.quantize import quantize
from jaxvision.compress import quantize as q
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from tests.serving.helpers import png, serve


def test_kernel_rounding_matches_hand_computation():
    # A [2, 2, 1, 3] conv kernel whose scales (absmax / 127.5) are powers of two, so w / scale
    # is exact however it is computed: channel 0 has ties 0.5 and 2.5 (half to even: 0, 2)
    # and +absmax (127.5 -> 128, saturated to 127); channel 1 is all zero; channel 2 has
    # -absmax (-127.5 -> -128) and -2.5 (-> -2).
    w = np.zeros((2, 2, 1, 3), np.float32)
    w[..., 0] = np.array([[127.5, 0.5], [1.5, 2.5]])[..., None] / 16
    w[..., 2] = np.array([[-127.5, 1.5], [-2.5, 0.0]])[..., None] / 32
    qa = q.quantize_kernel(jnp.asarray(w))
    assert qa.qvalue.dtype == jnp.int8 and qa.scale.shape == (1, 1, 1, 3)
    scale = np.array([1 / 16, 1.0, 1 / 32], np.float32)  # a zero channel's scale is 1
    np.testing.assert_array_equal(np.asarray(qa.scale).ravel(), scale)
    expected = np.zeros((2, 2, 1, 3), np.int8)
    expected[..., 0] = np.array([[127, 0], [2, 2]])[..., None]
    expected[..., 2] = np.array([[-128, 2], [-2, 0]])[..., None]
    np.testing.assert_array_equal(np.asarray(qa.qvalue), expected)
    back = np.asarray(q.qwix.dequantize(qa))
    np.testing.assert_array_equal(back, expected * scale)  # q * scale, zeros exactly zero
    assert np.all(np.abs(back - w) <= scale / 2)


def test_storage_round_trip():
    model_template = {"params": {"conv": {"kernel": q.quantize_kernel(jnp.ones((3, 3, 2, 4)))}}}
    stored = q.to_storage(model_template)
    assert set(stored["params"]["conv"]["kernel"]) == {"qvalue", "scale"}
    back = q.from_storage(jax.eval_shape(lambda: model_template), stored)
    assert isinstance(back["params"]["conv"]["kernel"], q.qwix.QArray)
    assert back["params"]["conv"]["kernel"].qtype == jnp.int8
    np.testing.assert_array_equal(
        back["params"]["conv"]["kernel"].qvalue, stored["params"]["conv"]["kernel"]["qvalue"]
    )
    with pytest.raises(UserError, match="lack params/conv/kernel/scale"):
        q.from_storage(back, {"params": {"conv": {"kernel": {"qvalue": np.zeros(1)}}}})


@pytest.fixture(scope="module")
def quantized(digits_run, tmp_path_factory):
    """{mode: (workdir, report)}: the tiny run quantized both ways (no timing)."""
    workdir, _ = digits_run
    root = tmp_path_factory.mktemp("int8")
    return {
        mode: (str(root / mode), quantize(workdir, str(root / mode), mode, 2, speed_batch=0))
        for mode in q.MODES
    }


@pytest.mark.parametrize("mode", q.MODES)
def test_int8_model_agrees_with_float(quantized, digits_run, mode):
    out, report = quantized[mode]
    assert report["test_images"] == 360
    assert report["top1_agreement"] >= 0.99
    assert abs(report["top1_int8"] - report["top1_float"]) <= 0.01
    assert report["top1_float"] == pytest.approx(digits_run[1]["eval/top1"])
    # Weights: 4 bytes -> 1 per kernel weight (+ per-channel scales, float biases).
    assert report["weight_bytes_float"] / report["weight_bytes_int8"] > 3.5
    # The workdir reads back as a Predictor with the same predictions as the report's.
    predictor = Predictor.from_workdir(out)
    assert predictor.record["quantization"]["mode"] == mode
    kernel = predictor.variables["params"]["conv1"]["kernel"]
    qvalue = kernel["qvalue"] if "qvalue" in kernel else kernel["array"]["qvalue"]
    assert qvalue.dtype == jnp.int8
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert json.loads(f.readline())["eval/top1"] == report["top1_int8"]


@pytest.mark.slow
def test_int8_bundle_predicts_as_the_workdir(quantized, tmp_path):
    out, _ = quantized["weights+activations"]
    predictor = Predictor.from_workdir(out, max_batch=2)
    path = str(tmp_path / "bundle")
    bundle.write(predictor, path, platforms=("cpu",), source={"workdir": out, "step": 0})
    loaded = bundle.load(path)
    images = list(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8))
    np.testing.assert_array_equal(
        loaded.predict(images)["probs"], predictor.predict(images)["probs"]
    )
    dtypes = {x.dtype for x in jax.tree.leaves(loaded.variables)}
    assert dtypes == {np.dtype(np.int8), np.dtype(np.float32)}
    explained = loaded.explainer().explain(images[:1])
    assert explained["heatmaps"].shape == (1, 8, 8) and np.isfinite(explained["heatmaps"]).all()
    # jaxvision serve serves it unchanged: one HTTP call to a real server.
    process, url = serve(path, "--max_batch_size=2")
    try:
        files = [("image", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(images[:2])]
        answer = requests.post(f"{url}/v1/predict?top_k=1", files=files, timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert answer.status_code == 200, answer.text
    top = [p["labels"][0]["index"] for p in answer.json()["predictions"]]
    assert top == list(np.argmax(predictor.predict(images[:2])["probs"], -1))


def test_qat_model_rounds_forward_and_passes_gradients(digits_run):
    predictor = Predictor.from_workdir(digits_run[0])
    model, variables = predictor.task.model, predictor.variables
    qat = q.qat_model(model)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    ref = jax.jit(lambda v: model.apply(v, x, train=False))(variables)

    def loss(params):
        logits = qat.apply({**variables, "params": params}, x, train=False)
        return logits.sum(), logits

    grads, fake = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    assert 0 < float(jnp.abs(fake - ref).max()) < 0.1 * float(jnp.abs(ref).max())
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_quantize_training_key_is_checked():
    config_checks.check_training_config({"quantize_training": "int8"})
    with pytest.raises(UserError, match="quantize_training='int4' is out of range"):
        config_checks.check_training_config({"quantize_training": "int4"})


def test_quantize_refuses_bad_requests(quantized, digits_run, tmp_path):
    out, _ = quantized["weights"]
    with pytest.raises(UserError, match="is not a float classifier"):
        quantize(out, str(tmp_path / "again"), "weights", 1, speed_batch=0)
    with pytest.raises(UserError, match="is not empty"):
        quantize(digits_run[0], out, "weights", 1, speed_batch=0)
    with pytest.raises(UserError, match="calibration_batches=0"):
        quantize(digits_run[0], str(tmp_path / "new"), "weights+activations", 0, speed_batch=0)
