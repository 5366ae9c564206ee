"""Detection networks: torchvision's parameter counts and head layout, dtypes, frozen BatchNorm,
torchvision's trainable_backbone_layers, and the registry.

Numbers from torchvision 0.29.1 (tests/weights/fixtures/make_detection_fixtures.py prints the
trainable counts); tests/weights/test_parity_detection.py checks outputs against torch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.models.detection import fpn
from jaxvision.models.detection.retinanet import RetinaNet
from jaxvision.models.detection.ssd import SSD
from jaxvision.models.resnet import BasicBlock
from jaxvision.train.optim import param_path

# sum(p.numel() for p in model.parameters()), num_classes=91.
TORCHVISION_PARAMS = {
    ("retinanet_resnet50_fpn", "frozen"): 34_014_999,  # weights_backbone given: FrozenBatchNorm2d
    ("retinanet_resnet50_fpn", "batch"): 34_068_119,  # from scratch: BatchNorm2d
    ("ssd300_vgg16", None): 35_641_826,
}
# Parameters with requires_grad for trainable_backbone_layers = 0..5.
TORCHVISION_TRAINABLE = {
    ("retinanet_resnet50_fpn", "frozen"): (
        10_560_087,
        25_502_295,
        32_580_183,
        33_792_599,
        34_005_591,
        34_014_999,
    ),
    ("retinanet_resnet50_fpn", "batch"): (
        10_560_087,
        25_524_823,
        32_623_191,
        33_842_775,
        34_058_583,
        34_068_119,
    ),
    ("ssd300_vgg16", None): (
        20_927_138,
        28_006_562,
        33_906_338,
        35_381_666,
        35_603_106,
        35_641_826,
    ),
}
INPUT = {"retinanet_resnet50_fpn": (320, 416), "ssd300_vgg16": (300, 300)}


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@functools.cache
def abstract(name, norm=None, height=None, width=None):
    """(model, its variables as ShapeDtypeStructs, the abstract outputs on [2, H, W, 3])."""
    model = detection.build(name, num_classes=91, **({"norm": norm} if norm else {}))
    x = jax.ShapeDtypeStruct((2, height or INPUT[name][0], width or INPUT[name][1], 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return model, variables, jax.eval_shape(model.apply, variables, x)


def random_variables(model, shape, seed=0):
    """init's structure filled by numpy (no compile): He-scaled kernels so activations stay
    O(1), small random biases, BN scale ~1 and variance > 0, the SSD scale at ~20."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        leaf = path[-1].key
        if leaf == "kernel":
            return rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))
        if leaf in ("scale", "var"):
            return 1 + 0.2 * np.abs(rng.normal(size=s.shape))
        if leaf == "scale_weight":
            return 20 + rng.normal(size=s.shape)
        return 0.1 * rng.normal(size=s.shape)

    abstract_vars = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    return jax.tree_util.tree_map_with_path(
        lambda p, s: fill(p, s).astype(np.float32), abstract_vars
    )


def tiny_retinanet(**kwargs):
    """P3-P7 over 64x96: 8x12, 4x6, 2x3, 1x2, 1x1 (A = (96 + 24 + 6 + 2 + 1) * 9 = 1,161)."""
    options = dict(width=8, fpn_channels=16, head_convs=1, norm="batch")
    return RetinaNet((1, 1, 1, 1), BasicBlock, num_classes=3, **{**options, **kwargs})


def tiny_ssd(**kwargs):
    """64x64: conv4_3 8x8 (4 boxes), fc7 4x4 (6), one extra 2x2 (4): A = 256 + 96 + 16."""
    return SSD(
        num_classes=3,
        width=4,
        fc_channels=16,
        extra_blocks=((8, 16, 2, 1),),
        aspect_ratios=((2,), (2, 3), (2,)),
        scales=(0.2, 0.4, 0.6, 0.8),
        steps=(8, 16, 32),
        image_size=64,
        **kwargs,
    )


@pytest.mark.parametrize(("name", "norm"), sorted(TORCHVISION_PARAMS, key=str))
def test_param_counts_equal_torchvision(name, norm):
    _, variables, _ = abstract(name, norm)
    assert count(variables["params"]) == TORCHVISION_PARAMS[(name, norm)]


def test_frozen_batch_norm_lives_outside_params():
    _, frozen, _ = abstract("retinanet_resnet50_fpn", "frozen")
    _, batch, _ = abstract("retinanet_resnet50_fpn", "batch")
    # 26,560 BatchNorm channels in ResNet-50: 4 tensors each when frozen, 2 statistics else.
    assert count(frozen["batch_stats"]) == 4 * 26_560
    assert count(batch["batch_stats"]) == 2 * 26_560
    assert sorted(frozen["batch_stats"]["backbone"]["bn1"]) == ["bias", "mean", "scale", "var"]
    assert "bn1" not in frozen["params"]["backbone"]
    assert sorted(batch["params"]["backbone"]["bn1"]) == ["bias", "scale"]
    assert frozen["params"]["backbone"]["layer4_0"]["downsample_conv"]["kernel"].shape == (
        1,
        1,
        1024,
        2048,
    )


@pytest.mark.parametrize(
    ("name", "side", "shapes", "anchors"),
    [
        # torchvision: 320x416 → P3..P7 as ceil(side / stride).
        ("retinanet_resnet50_fpn", (320, 416), ((40, 52), (20, 26), (10, 13), (5, 7), (3, 4)), 9),
        (
            "ssd300_vgg16",
            (300, 300),
            ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)),
            (4, 6, 6, 6, 4, 4),
        ),
        ("retinanet_resnet18_fpn_small", (128, 128), ((16, 16), (8, 8), (4, 4)), 9),
        (
            "ssd128_vgg16_small",
            (128, 128),
            ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1)),
            (4, 6, 6, 4, 4),
        ),
    ],
)
def test_output_shapes_and_feature_shapes(name, side, shapes, anchors):
    model, _, outputs = abstract(name, None, *side)
    assert detection.feature_shapes(model, *side) == shapes
    per_level = (anchors,) * len(shapes) if isinstance(anchors, int) else anchors
    assert model.num_anchors() == anchors
    num = sum(h * w * a for (h, w), a in zip(shapes, per_level, strict=True))
    assert {k: (v.shape, v.dtype) for k, v in outputs.items()} == {
        "cls_logits": ((2, num, 91), jnp.float32),
        "bbox_regression": ((2, num, 4), jnp.float32),
    }
    assert (
        num
        == {
            "retinanet_resnet50_fpn": 24_993,
            "ssd300_vgg16": 8_732,
            "retinanet_resnet18_fpn_small": 3_024,
            "ssd128_vgg16_small": 1_524,
        }[name]
    )


def test_anchor_configuration_is_torchvisions():
    model = detection.build("retinanet_resnet50_fpn", num_classes=91)
    # torchvision's _default_anchorgen: (x, int(x * 2 ** (1/3)), int(x * 2 ** (2/3))).
    assert model.anchor_sizes() == (
        (32, 40, 50),
        (64, 80, 101),
        (128, 161, 203),
        (256, 322, 406),
        (512, 645, 812),
    )
    assert model.anchor_aspect_ratios() == ((0.5, 1.0, 2.0),) * 5
    assert model.family == "retinanet" and model.levels() == (3, 4, 5, 6, 7)
    small = detection.build("retinanet_resnet18_fpn_small", num_classes=4)
    assert small.anchor_sizes() == ((16, 20, 25), (32, 40, 50), (64, 80, 101))
    ssd = detection.build("ssd300_vgg16", num_classes=91)
    assert (ssd.family, ssd.image_size, ssd.steps) == ("ssd", 300, (8, 16, 32, 64, 100, 300))
    assert ssd.scales == (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)


HEAD_CONVS = ("cls_logits", "bbox_reg", "module_list")


def _torch_layout(conv_out: np.ndarray, columns: int) -> np.ndarray:
    """torchvision's head flattening, literally: NHWC → NCHW, view(N, -1, columns, H, W),
    permute(0, 3, 4, 1, 2), reshape(N, -1, columns)."""
    n, h, w, _ = conv_out.shape
    nchw = conv_out.transpose(0, 3, 1, 2).reshape(n, -1, columns, h, w)
    return nchw.transpose(0, 3, 4, 1, 2).reshape(n, -1, columns)


@pytest.mark.parametrize(
    ("make", "outputs"),
    [
        (tiny_retinanet, {"cls_logits": "cls_logits", "bbox_regression": "bbox_reg"}),
        (tiny_ssd, {"cls_logits": "module_list", "bbox_regression": "module_list"}),
    ],
)
def test_head_layout_is_torchvisions(make, outputs):
    model = make()
    x = np.random.default_rng(1).normal(size=(1, 64, 96 if model.family == "retinanet" else 64, 3))
    variables = random_variables(model, x.shape)
    out, state = jax.jit(
        lambda v, x: model.apply(
            v,
            x,
            capture_intermediates=lambda m, _: (m.name or "").startswith(HEAD_CONVS),
            mutable=["intermediates"],
        )
    )(variables, x)
    heads = state["intermediates"]["head"]
    for key, branch, columns in [
        ("cls_logits", "classification_head", 3),
        ("bbox_regression", "regression_head", 4),
    ]:
        convs = heads[branch]
        if outputs[key] == "module_list":  # SSD: one conv per level
            maps = [convs[f"module_list_{i}"]["__call__"][0] for i in range(len(convs))]
        else:  # RetinaNet: one conv called once per level
            maps = convs[outputs[key]]["__call__"]
        expected = np.concatenate([_torch_layout(np.asarray(m), columns) for m in maps], axis=1)
        np.testing.assert_array_equal(np.asarray(out[key]), expected)
    shapes = detection.feature_shapes(model, *x.shape[1:3])
    per_level = model.num_anchors()
    per_level = (per_level,) * len(shapes) if isinstance(per_level, int) else per_level
    assert out["cls_logits"].shape[1] == sum(
        h * w * a for (h, w), a in zip(shapes, per_level, strict=True)
    )


@pytest.mark.slow
@pytest.mark.parametrize("make", [tiny_retinanet, tiny_ssd])
def test_bfloat16_compute_keeps_float32_variables(make):
    model, model16 = make(), make(dtype=jnp.bfloat16)
    x = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype(np.float32)
    abstract16 = jax.eval_shape(model16.init, jax.random.key(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract16)} == {jnp.dtype(jnp.float32)}
    variables = random_variables(model, x.shape)
    out32 = jax.jit(model.apply)(variables, x)
    out16 = jax.jit(model16.apply)(variables, x)
    for key in ("cls_logits", "bbox_regression"):
        assert out16[key].dtype == jnp.float32
        scale = float(jnp.abs(out32[key]).max())
        assert 0 < float(jnp.abs(out16[key] - out32[key]).max()) < 0.05 * scale


@pytest.mark.slow
def test_frozen_batch_norm_stays_fixed_in_training():
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    for norm, changes in [("frozen", False), ("batch", True)]:
        model = tiny_retinanet(norm=norm)
        variables = random_variables(model, x.shape)
        _, updates = jax.jit(
            lambda v, x, model=model: model.apply(v, x, train=True, mutable=["batch_stats"])
        )(variables, x)
        before = variables["batch_stats"]["backbone"]["bn1"]["mean"]
        after = updates["batch_stats"]["backbone"]["bn1"]["mean"]
        assert (not np.array_equal(before, after)) == changes, norm


@pytest.mark.parametrize(("name", "norm"), sorted(TORCHVISION_TRAINABLE, key=str))
def test_frozen_backbone_trains_what_torchvision_trains(name, norm):
    model, variables, _ = abstract(name, norm)
    leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    for layers, expected in enumerate(TORCHVISION_TRAINABLE[(name, norm)]):
        frozen = detection.frozen_backbone(model, layers)
        trainable = sum(int(np.prod(v.shape)) for p, v in leaves if not frozen(param_path(p)))
        assert trainable == expected, layers
    default = detection.frozen_backbone(model)  # torchvision's default: RetinaNet 3, SSD 4
    layers = {"retinanet": 3, "ssd": 4}[model.family]
    assert [default(param_path(p)) for p, _ in leaves] == [
        detection.frozen_backbone_layers(model.family, layers)(param_path(p)) for p, _ in leaves
    ]


def test_frozen_backbone_paths():
    retinanet = detection.frozen_backbone_layers("retinanet", 3)
    assert retinanet("backbone/conv1/kernel") and retinanet("backbone/bn1/scale")
    assert retinanet("backbone/layer1_2/conv3/kernel")
    assert not retinanet("backbone/layer2_0/downsample_conv/kernel")
    assert not retinanet("fpn/p6/kernel") and not retinanet("head/classification_head/conv_0/bias")
    assert not detection.frozen_backbone_layers("retinanet", 5)("backbone/bn1/scale")
    ssd = detection.frozen_backbone_layers("ssd", 0)
    assert ssd("backbone/features_0/kernel") and ssd("backbone/extra_0_5/kernel")
    assert not ssd("backbone/extra_0_7_1/kernel") and not ssd("backbone/scale_weight")
    with pytest.raises(UserError, match="0..5"):
        detection.frozen_backbone_layers("ssd", 6)


def test_nearest_upsampling_matches_torch():
    # torch.nn.functional.interpolate(mode="nearest", size=...) source rows (torch 2.14).
    assert fpn._nearest_indices(3, 5).tolist() == [0, 0, 1, 1, 2]
    assert fpn._nearest_indices(7, 13).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert fpn._nearest_indices(2, 5).tolist() == [0, 0, 0, 1, 1]
    assert fpn._nearest_indices(10, 20).tolist() == np.repeat(np.arange(10), 2).tolist()


def test_registry():
    names = detection.names()
    assert {"retinanet_resnet50_fpn", "ssd300_vgg16", "retinanet_resnet18_fpn_small"} <= set(names)
    assert "width" in detection.options("retinanet_resnet18_fpn")
    assert "stage_sizes" not in detection.options("retinanet_resnet18_fpn")
    assert detection.family("ssd128_vgg16_small") == "ssd"
    assert detection.class_outputs("retinanet_resnet50_fpn") == (
        "head/classification_head/cls_logits",
    )
    small = detection.build("retinanet_resnet18_fpn_small", num_classes=4, width=8)
    assert (small.width, small.fpn_channels, small.norm) == (8, 64, "batch")
    with pytest.raises(UserError, match="unknown detector 'yolo'"):
        detection.build("yolo", num_classes=3)
    with pytest.raises(UserError, match="has no option 'depth'"):
        detection.build("ssd300_vgg16", num_classes=3, depth=3)
    with pytest.raises(UserError, match="num_classes counts the background"):
        detection.build("ssd300_vgg16", num_classes=1)
    with pytest.raises(UserError, match="unknown norm 'group'"):
        detection.build("retinanet_resnet50_fpn", num_classes=3, norm="group")
    with pytest.raises(UserError, match="needs 4 aspect_ratios"):
        detection.build("ssd300_vgg16", num_classes=3, extra_blocks=((8, 16, 2, 1),) * 2)
    with pytest.raises(UserError, match="min_level is 2..5"):
        detection.build("retinanet_resnet50_fpn", num_classes=3, max_level=4)


@pytest.mark.slow
def test_detail_paths_only_add_their_convs():
    # c2_detail adds conv(C2) to P3, bottom_up conv(relu(N_l)) to P_{l+1}: with those convs at
    # zero the detector is the plain one, parameter for parameter.
    plain = detection.build("retinanet_resnet18_fpn_small", num_classes=4, width=8)
    both = detection.build(
        "retinanet_resnet18_fpn_small", num_classes=4, width=8, c2_detail=True, bottom_up=True
    )
    x = np.random.default_rng(1).normal(size=(2, 64, 96, 3)).astype(np.float32)
    variables = random_variables(both, x.shape)  # no compile
    params = dict(variables["params"])
    added = {
        k: v["kernel"].shape for k, v in params.items() if k not in ("backbone", "fpn", "head")
    }
    assert added == {
        "c2_detail": (3, 3, 8, 64),
        "bottom_up_1": (3, 3, 64, 64),
        "bottom_up_2": (3, 3, 64, 64),
    }
    apply_both = jax.jit(both.apply)  # one program for both calls
    with_paths = apply_both(variables, x)
    zeroed = {k: jax.tree.map(jnp.zeros_like, v) if k in added else v for k, v in params.items()}
    without = apply_both({**variables, "params": zeroed}, x)
    base = {k: v for k, v in params.items() if k not in added}
    want = jax.jit(plain.apply)({**variables, "params": base}, x)
    for key in ("cls_logits", "bbox_regression"):
        np.testing.assert_allclose(without[key], want[key], rtol=1e-6, atol=1e-6)
        assert float(jnp.max(jnp.abs(with_paths[key] - want[key]))) > 1e-3
    with pytest.raises(UserError, match="needs min_level 3"):
        detection.build("retinanet_resnet50_fpn", num_classes=3, min_level=4, c2_detail=True)
