"""torchvision weight converter on stored fixtures (no torch needed): logits, names, round trips.

The fixtures come from tests/weights/fixtures/make_torchvision_fixtures.py (torchvision's own
classes, shrunk); tests/weights/test_parity_torch.py checks the full-size models against torch.
"""

import functools
import json
import os
import pickle
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import densenet, googlenet, inception, resnet, vgg
from jaxvision.weights import (
    export_weights,
    import_weights,
    load_safetensors,
    load_weights,
    save_safetensors,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# fixture -> (model name for the converter, our model in the fixture's configuration).
SMALL = {
    "resnet_basic": (
        "resnet18",
        lambda n=5: resnet.ResNet((2, 1, 1, 1), resnet.BasicBlock, num_classes=n, width=4),
    ),
    "resnet_bottleneck": (
        "resnet50",
        lambda n=5: resnet.ResNet((2, 1, 1, 1), resnet.Bottleneck, num_classes=n, width=4),
    ),
    "vgg": ("vgg16", lambda n=5: vgg.VGG(cfg=(8, "M", 16, "M"), hidden=32, num_classes=n)),
    "vgg_bn": (
        "vgg16_bn",
        lambda n=5: vgg.VGG(cfg=(8, 8, "M", 16, "M"), batch_norm=True, hidden=32, num_classes=n),
    ),
    "densenet": (
        "densenet121",
        lambda n=5: densenet.DenseNet(
            num_classes=n, growth_rate=4, block_config=(1, 2), num_init_features=8, bn_size=2
        ),
    ),
}


def fixture_path(name):
    return os.path.join(FIXTURES, name)


def expected(name):
    with np.load(fixture_path(f"{name}_expected.npz")) as data:
        return data["images"], data["logits"]


@functools.cache
def _abstract_variables(model, shape):
    """model.init's variables as ShapeDtypeStructs, traced once per model and input shape."""
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def fresh_variables(model, shape, seed=0):
    """Variables shaped like model.init's, filled from numpy (no compile), BN variances > 0."""
    rng = np.random.default_rng(seed)
    abstract = _abstract_variables(model, tuple(shape))
    fill = lambda s: (rng.normal(size=s.shape) * 0.1).astype(s.dtype)  # noqa: E731
    variables = jax.tree.map(fill, abstract)
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree.map_with_path(
            lambda path, v: 1 + abs(v) if path[-1].key == "var" else v, variables["batch_stats"]
        )
    return variables


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_torchvision_models_give_torch_logits(name):
    model_name, make = SMALL[name]
    images, torch_logits = expected(name)
    model = make()
    variables, kept = load_weights(
        fixture_path(f"{name}.safetensors"), model_name, fresh_variables(model, images.shape)
    )
    assert kept == []
    logits = jax.jit(model.apply)(variables, images)
    assert logits.shape == torch_logits.shape == (2, 5)
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_export_inverts_import(name):
    model_name, make = SMALL[name]
    images, _ = expected(name)
    tensors = load_safetensors(fixture_path(f"{name}.safetensors"))
    variables, _ = import_weights(model_name, tensors, fresh_variables(make(), images.shape))
    exported = export_weights(model_name, variables)
    assert sorted(exported) == sorted(tensors)
    for key, value in tensors.items():
        if key.endswith("num_batches_tracked"):  # not kept by flax: exported as a fresh 0
            assert (exported[key].dtype, exported[key].shape, exported[key]) == (np.int64, (), 0)
        else:
            assert exported[key].dtype == value.dtype
            np.testing.assert_array_equal(exported[key], value, err_msg=key)


def test_densenet_reads_legacy_layer_names():
    # torchvision's published DenseNet files name denselayer modules `norm.1`, not `norm1`.
    model_name, make = SMALL["densenet"]
    images, torch_logits = expected("densenet")
    tensors = load_safetensors(fixture_path("densenet.safetensors"))
    legacy = {
        re.sub(r"(denselayer\d+\.(norm|conv))([12])\.", r"\1.\3.", k): v for k, v in tensors.items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    model = make()
    variables, _ = import_weights(model_name, legacy, fresh_variables(model, images.shape))
    logits = jax.jit(model.apply)(variables, images)  # eagerly, each op would compile alone
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=1e-4)


with open(fixture_path("torchvision_state_dict_shapes.json")) as f:
    TORCHVISION_SHAPES = json.load(f)  # full torchvision state dicts, aux heads on
BIG = {
    "googlenet": (googlenet.GoogLeNet, 224, ("aux1.", "aux2.")),
    "inception_v3": (inception.InceptionV3, 299, ("AuxLogits.",)),
}


@pytest.mark.parametrize("model_name", sorted(BIG))
@pytest.mark.parametrize("aux_logits", [True, False])
def test_export_names_and_shapes_are_torchvisions(model_name, aux_logits):
    cls, side, aux_prefixes = BIG[model_name]
    model = cls(num_classes=1000, aux_logits=aux_logits)
    variables = fresh_variables(model, (1, side, side, 3))
    exported = export_weights(model_name, variables)
    reference = {
        k: v
        for k, v in TORCHVISION_SHAPES[model_name].items()
        if aux_logits or not k.startswith(aux_prefixes)
    }
    assert {k: list(v.shape) for k, v in exported.items()} == reference

    imported, kept = import_weights(model_name, exported, variables)
    assert kept == []
    jax.tree.map(np.testing.assert_array_equal, imported, variables)


@pytest.mark.parametrize("model_name", sorted(BIG))
def test_file_with_aux_heads_fits_model_without(model_name):
    # torchvision's ImageNet files carry aux heads; a model without them drops those tensors.
    cls, side, aux_prefixes = BIG[model_name]
    with_aux = fresh_variables(cls(num_classes=1000, aux_logits=True), (1, side, side, 3))
    tensors = export_weights(model_name, with_aux)
    without = fresh_variables(cls(num_classes=1000), (1, side, side, 3), seed=1)
    imported, _ = import_weights(model_name, tensors, without)
    assert jax.tree.structure(imported) == jax.tree.structure(without)
    exported = export_weights(model_name, imported)
    for key, value in exported.items():
        assert not key.startswith(aux_prefixes)
        np.testing.assert_array_equal(value, tensors[key], err_msg=key)


def test_new_num_classes_keeps_fresh_head():
    model_name, make = SMALL["resnet_basic"]
    images, _ = expected("resnet_basic")
    tensors = load_safetensors(fixture_path("resnet_basic.safetensors"))
    fresh = fresh_variables(make(7), images.shape)
    variables, kept = import_weights(model_name, tensors, fresh)
    assert kept == ["params/fc/bias", "params/fc/kernel"]
    np.testing.assert_array_equal(
        variables["params"]["fc"]["kernel"], fresh["params"]["fc"]["kernel"]
    )
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["kernel"],
        np.transpose(tensors["conv1.weight"], (2, 3, 1, 0)),
    )
    # Same class count, but new_head asks for a fresh classifier anyway.
    fresh5 = fresh_variables(make(), images.shape)
    variables, kept = import_weights(model_name, tensors, fresh5, new_head=True)
    assert kept == ["params/fc/bias", "params/fc/kernel"]
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], fresh5["params"]["fc"]["bias"])


def test_vgg_head_is_last_classifier_layer():
    model_name, make = SMALL["vgg"]
    images, _ = expected("vgg")
    tensors = load_safetensors(fixture_path("vgg.safetensors"))
    _, kept = import_weights(model_name, tensors, fresh_variables(make(3), images.shape))
    assert kept == ["params/classifier_6/bias", "params/classifier_6/kernel"]


class _Payload:
    """Unpickling this creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_torch_file_is_refused_unopened(tmp_path):
    marker = str(tmp_path / "unpickled")
    path = tmp_path / "resnet18.pth"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    model = resnet.ResNet18(num_classes=10)
    with pytest.raises(UserError, match="pickled PyTorch file"):
        load_weights(str(path), "resnet18", fresh_variables(model, (1, 32, 32, 3)))
    assert not os.path.exists(marker)


def test_truncated_safetensors_is_user_error(tmp_path):
    with open(fixture_path("vgg.safetensors"), "rb") as f:
        data = f.read()
    path = tmp_path / "vgg.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="is the file complete"):
        load_safetensors(str(path))


def test_other_architecture_is_user_error():
    tensors = load_safetensors(fixture_path("vgg.safetensors"))
    model = resnet.ResNet((2, 1, 1, 1), resnet.BasicBlock, num_classes=5, width=4)
    with pytest.raises(UserError, match="does not fit the model"):
        import_weights("resnet18", tensors, fresh_variables(model, (1, 32, 32, 3)))


def test_big_vision_npz_for_a_torchvision_model_is_user_error(tmp_path):
    path = tmp_path / "resnet.npz"
    np.savez(path, w=np.zeros(3))
    model = resnet.ResNet((2, 1, 1, 1), resnet.BasicBlock, num_classes=5, width=4)
    with pytest.raises(
        UserError, match=r"only ViT, Mixer and image-text models read; resnet18 takes a "
    ):
        load_weights(str(path), "resnet18", fresh_variables(model, (1, 32, 32, 3)))


def _stored_as(tmp_path, dtype, name="resnet_basic"):
    """The fixture's float tensors stored as `dtype` (integers as torch's `.long()` casts)."""
    tensors = load_safetensors(fixture_path(f"{name}.safetensors"))
    path = tmp_path / f"{name}.safetensors"
    save_safetensors(
        str(path),
        {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in tensors.items()},
    )
    return str(path)


def test_integer_weights_where_the_model_has_floats_are_refused(tmp_path):
    # Cast to float32 they would be whole numbers: nearly every weight 0.
    model_name, make = SMALL["resnet_basic"]
    images, _ = expected("resnet_basic")
    with pytest.raises(
        UserError,
        match=r"^weights for resnet18: params/\S+ is stored as int64, the model expects "
        r"floating-point values \(float32\)",
    ):
        load_weights(
            _stored_as(tmp_path, np.int64), model_name, fresh_variables(make(), (1, 8, 8, 3))
        )


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_precision_weights_are_upcast(tmp_path, dtype):
    model_name, make = SMALL["resnet_basic"]
    images, torch_logits = expected("resnet_basic")
    model = make()
    variables, _ = load_weights(
        _stored_as(tmp_path, dtype), model_name, fresh_variables(model, images.shape)
    )
    assert {v.dtype for v in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
    logits = jax.jit(model.apply)(variables, images)
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=0.1)
    assert not np.allclose(logits, 0, atol=1e-3)


def test_non_finite_weights_are_refused(tmp_path):
    model_name, make = SMALL["resnet_basic"]
    tensors = load_safetensors(fixture_path("resnet_basic.safetensors"))
    tensors["conv1.weight"][0, 0, 0, :2] = [np.nan, np.inf]
    path = tmp_path / "nan.safetensors"
    save_safetensors(str(path), tensors)
    with pytest.raises(UserError, match="params/conv1/kernel holds 2 NaN or infinite values"):
        load_weights(str(path), model_name, fresh_variables(make(), (1, 8, 8, 3)))
