"""The FID Inception-v3 equals pytorch-fid's InceptionV3 (the FID variant): parameter count,
weight names, its pooling and resize differences from torchvision's Inception, and pool3
features with the same random weights — against a committed reference
(../evaluation/fixtures/make_fid_inception_fixture.py) and, where torch is installed, against
pytorch-fid itself on weights it initialises."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import fid_inception
from jaxvision.weights import fid_inception as fid_weights
from jaxvision.weights.common import save_safetensors

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "evaluation", "fixtures")
sys.path.insert(0, FIXTURES)
from fid_inception_weights import random_variables  # noqa: E402


@pytest.fixture(scope="module")
def variables():
    return random_variables(0)


@pytest.fixture(scope="module")
def features():
    return jax.jit(fid_inception.fid_inception_features)


def test_parameter_count_equals_pytorch_fid():
    shapes = jax.eval_shape(
        fid_inception.FIDInceptionV3().init, jax.random.key(0), jnp.zeros((1, 299, 299, 3))
    )
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes["params"]))
    assert count == fid_inception.TORCH_PARAMETERS == 21_785_568


@pytest.mark.slow
def test_pool3_equals_pytorch_fid_reference(variables, features):
    with np.load(os.path.join(FIXTURES, "fid_inception_expected.npz")) as data:
        images, expected = data["images"], data["pool3"]
    out = np.asarray(features(variables, jnp.asarray(images)))
    assert out.shape == (3, 2048)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_branch_pools_are_tf_style():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    avg = np.asarray(fid_inception.avg_pool_without_padding(x))[0, :, :, 0]
    assert avg[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)  # corner: 4 pixels, not 9
    assert avg[1, 1] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))
    top = np.asarray(fid_inception.max_pool_3x3(-x - 1.0))[0, :, :, 0]
    assert top[0, 0] == -1.0  # padding never wins, even over negative maps
    assert top.shape == (4, 4)


def test_resize_is_half_pixel_bilinear():
    # Upsampling 2 -> 4 with half-pixel centres: edges clamp, inner taps at 1/4 and 3/4.
    x = jnp.asarray([[0.0, 4.0], [8.0, 12.0]]).reshape(1, 2, 2, 1)
    out = np.asarray(fid_inception.resize_bilinear(x, 4))[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 1.0, 3.0, 4.0])
    # Downsampling 4 -> 2 takes two taps, no antialiasing: the mean of the middle pair.
    y = jnp.arange(4.0).reshape(1, 1, 4, 1) * jnp.ones((1, 4, 1, 1))
    np.testing.assert_allclose(
        np.asarray(fid_inception.resize_bilinear(y, 2))[0, 0, :, 0], [0.5, 2.5]
    )


def test_weights_round_trip_and_wrapper_names(variables):
    tensors = fid_weights.to_torch(variables)
    assert "Mixed_7c.branch_pool.conv.weight" in tensors and not any("fc." in k for k in tensors)
    tensors["fc.weight"] = np.zeros((1008, 2048), np.float32)  # the unused 1,008-class head
    loaded = fid_weights.import_fid_inception(tensors)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    # pytorch-fid's InceptionV3 wrapper names its modules blocks.<i>.<j>.
    assert fid_weights._torchvision_name("blocks.3.2.branch_pool.conv.weight") == (
        "Mixed_7c.branch_pool.conv.weight"
    )
    assert fid_weights._torchvision_name("blocks.0.2.bn.running_var") == (
        "Conv2d_2b_3x3.bn.running_var"
    )


def test_wrong_weight_file_is_a_user_error(variables, tmp_path):
    tensors = fid_weights.to_torch(variables)
    del tensors["Mixed_5b.branch1x1.conv.weight"]
    path = str(tmp_path / "partial.safetensors")
    save_safetensors(path, tensors)
    with pytest.raises(UserError, match="missing.*Mixed_5b/branch1x1/conv/kernel"):
        fid_weights.load_fid_inception(path)
    with pytest.raises(UserError, match="pickled"):
        fid_weights.load_fid_inception(str(tmp_path / "pt_inception.pth"))
    with pytest.raises(UserError, match=r"\[B, H, W, 1 or 3\]"):
        fid_inception.to_unit_range(jnp.zeros((2, 8, 8, 4)))


# --- against pytorch-fid itself, where torch is installed ----------------------------------


def test_pool3_equals_pytorch_fid_on_its_own_init(features, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_fid")
    import make_fid_inception_fixture as maker
    from pytorch_fid import inception

    # pytorch-fid's fid_inception_v3() structure, initialised by torch (no download), with its
    # BatchNorm statistics randomised so that every layer's normalisation matters.
    torch.manual_seed(0)
    net = _fid_inception_structure(inception)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
            elif isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    path = str(tmp_path / "pt_inception.safetensors")
    save_safetensors(path, {k: v.numpy() for k, v in state.items()})
    model = maker.pytorch_fid_model(state)
    images = np.random.default_rng(5).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    expected = maker.pool3(model, images)
    ours = np.asarray(features(fid_weights.load_fid_inception(path), jnp.asarray(images)))
    print("max abs diff vs pytorch-fid pool3:", float(np.abs(ours - expected).max()))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    # Grey images: one channel repeated, as pytorch-fid's PIL convert("RGB") does.
    grey = images[:, :, :, :1]
    ours = np.asarray(features(fid_weights.load_fid_inception(path), jnp.asarray(grey)))
    np.testing.assert_allclose(
        ours, maker.pool3(model, np.repeat(grey, 3, -1)), rtol=1e-4, atol=1e-4
    )


def _fid_inception_structure(inception):
    """fid_inception_v3() without its download: torchvision's Inception3 (1,008 classes) with
    pytorch-fid's FID blocks, exactly as that function patches them."""
    net = inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = inception.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = inception.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = inception.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = inception.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = inception.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = inception.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = inception.FIDInceptionE_1(1280)
    net.Mixed_7c = inception.FIDInceptionE_2(2048)
    return net.eval()


def test_resize_equals_torch_interpolate():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).random((2, 23, 311, 3), np.float32)
    expected = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x.transpose(0, 3, 1, 2)),
            size=(299, 299),
            mode="bilinear",
            align_corners=False,
        )
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    ours = np.asarray(fid_inception.resize_bilinear(jnp.asarray(x), 299))
    np.testing.assert_allclose(ours, expected, atol=1e-5)
