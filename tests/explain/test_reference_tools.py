"""Agreement with the reference tools on the same small torchvision ResNet (random weights,
imported by torchvision names): Grad-CAM and Grad-CAM++ equal pytorch-grad-cam's maps, and
Integrated Gradients equals captum's with the same baseline, steps and rule. The references
are committed (fixtures/make_explain_fixtures.py writes them where torch is installed)."""

import os

import jax
import numpy as np
import pytest

from jaxvision.explain import ModelFunction, cam, gradients
from jaxvision.models import resnet
from jaxvision.weights import import_weights, load_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "..", "weights", "fixtures", "resnet_basic.safetensors")


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(HERE, "fixtures", "explain_expected.npz")) as data:
        expected = {k: data[k] for k in data.files}
    model = resnet.ResNet((2, 1, 1, 1), resnet.BasicBlock, num_classes=5, width=4)
    fresh = jax.jit(model.init)(jax.random.key(0), expected["x"][:1])
    variables, _ = import_weights("resnet18", load_safetensors(WEIGHTS), dict(fresh))
    fn = ModelFunction(
        model,
        variables,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        class_names=[str(i) for i in range(5)],
        image_size=64,
        channels=3,
        preprocess=None,
    )
    return fn, expected


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "gradcam_plus_plus"])
@pytest.mark.parametrize("layer", [("layer3", "C4"), ("layer4", "C5")])
def test_cams_equal_pytorch_grad_cam(reference, method, layer):
    fn, expected = reference
    theirs, ours = layer
    call = cam.gradcam if method == "gradcam" else cam.gradcam_plus_plus
    got = np.asarray(call(fn, expected["x"], expected["targets"], layer=ours))
    want = expected[f"{method}_{theirs}"]
    assert got.shape == want.shape and want.max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_equal_captum(reference, rule):
    fn, expected = reference
    got, check = gradients.integrated_gradients(
        fn, expected["x"], expected["targets"], baseline_kind="mean", steps=32, rule=rule
    )
    want = expected[f"ig_{rule}"]
    if rule == "riemann_trapezoid":
        # captum's trapezoid weighs its n points 1/n (ends 1/2n): they sum to (n - 1) / n, not
        # 1, so its attributions are ours times (n - 1) / n exactly; ours sum to f(x) - f(x').
        want = want * 32 / 31
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-4 * scale)
    if rule == "gausslegendre":
        # captum's convergence delta is sum(attributions) - (f(x) - f(baseline)), signed.
        np.testing.assert_allclose(
            check["sum"] - check["delta"], expected[f"ig_{rule}_delta"], atol=1e-3 * scale
        )
