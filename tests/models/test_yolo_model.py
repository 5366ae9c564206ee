"""The YOLO detectors (jaxvision.models.detection.yolo) against Ultralytics 8.4 (the reference).

Fixtures (tests/models/fixtures/make_yolo_fixtures.py, run in a torch venv): parameter counts
at every scale, and for yolov8n, yolo11n, yolo11s and yolo26n the reference's head outputs at
640 px on weights both sides draw from one seed (yolo_seeded.py), so no weight file is
committed. Here the same tensors go through jaxvision.weights.ultralytics into our model.

Tolerance of the raw outputs: 4x the reference's own float32 noise (its largest |float32 -
float64| over the whole tensor, stored in the fixture, 2e-7 .. 3e-6 here): two float32
evaluations of one network in different summation orders differ by about as much as either
differs from float64 (measured: ours is within 1.5x of it).
"""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.models.detection import yolo, yolo_blocks
from tests.models.fixtures import yolo_seeded

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
with open(os.path.join(FIXTURES, "yolo_parameter_counts.json")) as f:
    COUNTS = json.load(f)
NUM_CLASSES = 81  # the reference's nc=80, plus the background jaxvision counts


def parameter_count(name: str) -> int:
    model = detection.build(name, num_classes=NUM_CLASSES)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo26n"])
def test_parameter_counts_equal_the_references(name):
    # The reference counts DFL's fixed arange(16) as parameters; it trains only the rest.
    assert parameter_count(name) == COUNTS[name]["trainable"]
    dfl = 0 if name.startswith("yolo26") else 16
    assert COUNTS[name]["parameters"] - COUNTS[name]["trainable"] == dfl


@pytest.mark.slow
@pytest.mark.parametrize("family", ["yolov8", "yolo11", "yolo26"])
def test_parameter_counts_equal_the_references_at_every_scale(family):
    for scale in "smlx":
        assert parameter_count(family + scale) == COUNTS[family + scale]["trainable"], scale


def seeded_variables(name: str) -> tuple:
    """(model, variables): the fixture's seeded weights imported by their reference names."""
    model = detection.build(name, num_classes=NUM_CLASSES)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    exported = weights.export_weights(name, zeros)
    shapes = {k: v.shape for k, v in exported.items() if yolo_seeded.drawn(k)}
    fixture = np.load(os.path.join(FIXTURES, f"yolo_{name}.npz"))
    # Our export names and shapes are the reference's state dict, tensor for tensor.
    assert yolo_seeded.names_digest(shapes) == str(fixture["digest"])
    variables, kept = weights.import_weights(name, yolo_seeded.seeded_tensors(shapes), zeros)
    assert kept == []
    return model, variables, fixture


@functools.cache
def parity_outputs(name: str):
    model, variables, fixture = seeded_variables(name)
    outputs = jax.jit(model.apply)(variables, jnp.asarray(yolo_seeded.seeded_image()))
    return jax.tree.map(np.asarray, outputs), fixture


def check_parity(name: str) -> None:
    outputs, fixture = parity_outputs(name)
    anchors = fixture["anchors"]
    assert outputs["boxes"].shape == (1, 8400, 4 * (1 if name.startswith("yolo26") else 16))
    assert outputs["cls_logits"].shape == (1, 8400, 80)
    if name.startswith("yolo26"):  # end-to-end: the one-to-one branch beside
        assert outputs["one2one"]["boxes"].shape == (1, 8400, 4)
    branches = {"": outputs, **({"one2one_": outputs["one2one"]} if "one2one" in outputs else {})}
    for prefix, branch in branches.items():
        for key in ("boxes", "cls_logits"):
            ref = prefix + key
            ours = branch[key][0].astype(np.float64)
            atol = 4 * float(fixture[ref + "_noise"])
            np.testing.assert_allclose(ours[anchors], fixture[ref], rtol=0, atol=atol, err_msg=ref)
            # Whole-tensor statistics move by at most the largest elementwise difference.
            assert abs(np.abs(ours).mean() - fixture[ref + "_absmean"]) <= atol, ref
            assert abs(np.abs(ours).max() - fixture[ref + "_absmax"]) <= atol, ref
    points, strides = yolo.anchor_points([(80, 80), (40, 40), (20, 20)])
    decoded = yolo.decode_boxes(jnp.asarray(outputs["boxes"]), points, strides, xywh=True)
    # Pixels up to 640: 1e-3 px is ~16 float32 ulps there.
    np.testing.assert_allclose(np.asarray(decoded)[0, anchors], fixture["decoded"], atol=1e-3)
    if "e2e" in fixture:
        top = np.asarray(yolo.end_to_end_top(outputs, points, strides))[0]
        ref = fixture["e2e"]
        assert top.shape == (300, 6)
        np.testing.assert_array_equal(top[:, 5], ref[:, 5])  # classes, in the same order
        np.testing.assert_array_equal(top[:, 5], fixture["e2e64"][:, 5])  # as its float64 run
        np.testing.assert_allclose(top[:, 4], ref[:, 4], rtol=0, atol=2e-6)  # scores
        np.testing.assert_allclose(top[:, :4], ref[:, :4], rtol=0, atol=1e-3)  # boxes, px


@pytest.mark.slow
def test_yolo26n_equals_the_reference():
    check_parity("yolo26n")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo11s"])
def test_equals_the_reference(name):
    check_parity(name)


@pytest.mark.slow
def test_outputs_and_features_shapes():
    model = detection.build("yolo11n", num_classes=4)  # 3 classes to detect
    images = jax.ShapeDtypeStruct((2, 128, 96, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    out = jax.eval_shape(model.apply, variables, images)
    assert set(out) == {"boxes", "cls_logits"}
    assert out["boxes"].shape == (2, 16 * 12 + 8 * 6 + 4 * 3, 64)
    assert out["cls_logits"].shape == (2, 252, 3)
    maps = jax.eval_shape(functools.partial(model.apply, features=True), variables, images)
    assert [m.shape for m in maps] == [(2, 16, 12, 64), (2, 8, 6, 128), (2, 4, 3, 256)]
    assert detection.feature_shapes(model, 128, 96) == ((16, 12), (8, 6), (4, 3))
    half = detection.build("yolo11n", num_classes=4, dtype=jnp.bfloat16)
    out = jax.eval_shape(half.apply, variables, images)  # bf16 compute, float32 outputs
    assert out["boxes"].dtype == out["cls_logits"].dtype == jnp.float32
    with pytest.raises(UserError, match="multiples of 32"):
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 100, 96, 3), jnp.float32))


@pytest.mark.slow
def test_head_initial_biases_and_detached_one2one_branch():
    head = yolo.DetectHead(classes=3, reg_max=1, legacy=False, end2end=True)
    maps = [jnp.ones((1, 4 // 2**i, 4 // 2**i, 16 * 2**i)) for i in range(3)]
    variables = jax.jit(head.init)(jax.random.key(0), maps)
    params = variables["params"]
    for level, stride in enumerate((8, 16, 32)):
        prior = math.log(5 / 3 / (640 / stride) ** 2)  # ~5 objects per 640 px image
        for prefix in ("", "one2one_"):
            np.testing.assert_array_equal(params[f"{prefix}cv2_{level}_2"]["bias"], 2.0)
            np.testing.assert_allclose(params[f"{prefix}cv3_{level}_2"]["bias"], prior, 1e-6)

    def total(branch):
        def f(maps):
            out = head.apply(variables, maps)
            out = out["one2one"] if branch == "one2one" else out
            return out["boxes"].sum() + out["cls_logits"].sum()

        return jax.jit(jax.grad(f))(maps)

    # The one-to-one branch reads stop_gradient'ed maps: its loss never reaches the backbone.
    assert all(not np.any(g) for g in total("one2one"))
    assert all(np.any(g) for g in total("one2many"))


def test_batch_norm_is_the_references():
    # eps 1e-3, torch momentum 0.03: running = 0.97 * running + 0.03 * batch mean.
    layer = yolo_blocks.ConvNormAct(2, act=False)
    x = jax.random.normal(jax.random.key(1), (4, 3, 3, 2))
    variables = layer.init(jax.random.key(0), x)
    y, updated = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = x @ variables["params"]["conv"]["kernel"][0, 0]
    np.testing.assert_allclose(updated["batch_stats"]["bn"]["mean"], 0.03 * conv.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    normed = (conv - conv.mean((0, 1, 2))) / jnp.sqrt(conv.var((0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(y, normed, rtol=1e-4, atol=1e-5)


def test_anchor_points_are_cell_centres():
    points, strides = yolo.anchor_points([(2, 3), (1, 2)], strides=(8, 16))
    np.testing.assert_array_equal(
        points,
        [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5],
         [0.5, 0.5], [1.5, 0.5]],
    )  # fmt: skip
    np.testing.assert_array_equal(strides, [8] * 6 + [16] * 2)


def test_decode_boxes_takes_the_distribution_expectation():
    # One anchor at cell (1.5, 0.5), stride 8; sides: all mass on bin 2, uniform over 4 bins
    # (expectation 1.5), bins 0 and 2 equally (1.0), bin 3.
    big = 50.0
    sides = [
        [0, 0, big, 0],
        [0, 0, 0, 0],
        [big, 0, big, 0],
        [0, 0, 0, big],
    ]
    boxes = jnp.asarray(np.asarray(sides, np.float32).reshape(1, 1, 16))
    points, strides = np.asarray([[1.5, 0.5]], np.float32), np.asarray([8.0], np.float32)
    xyxy = yolo.decode_boxes(boxes, points, strides)
    np.testing.assert_allclose(xyxy[0, 0], [(1.5 - 2) * 8, (0.5 - 1.5) * 8, 2.5 * 8, 3.5 * 8])
    xywh = yolo.decode_boxes(boxes, points, strides, xywh=True)
    np.testing.assert_allclose(xywh[0, 0], [8.0, 10.0, 24.0, 36.0])
    # reg_max 1 (YOLO26): the values are the distances.
    ltrb = jnp.asarray([[[1.0, 2.0, 3.0, 4.0]]])
    np.testing.assert_allclose(yolo.decode_boxes(ltrb, points, strides)[0, 0], [4, -12, 36, 36])


def test_end_to_end_top_picks_anchors_then_classes():
    # 4 anchors, 2 classes, max_det 3: the three anchors with the best top class are kept
    # (0, 2, 1), then the three best (anchor, class) pairs among them: anchor 2 holds two.
    logits = jnp.asarray([[[3.0, -1.0], [0.0, 0.5], [2.0, 2.5], [-3.0, -2.0]]])
    ltrb = jnp.ones((1, 4, 4))
    points = np.asarray([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]], np.float32)
    top = yolo.end_to_end_top(
        {"boxes": ltrb, "cls_logits": logits}, points, np.ones(4, np.float32), max_det=3
    )
    assert top.shape == (1, 3, 6)
    sig = jax.nn.sigmoid
    np.testing.assert_allclose(top[0, :, 4], [sig(3.0), sig(2.5), sig(2.0)], rtol=1e-6)
    np.testing.assert_array_equal(top[0, :, 5], [0, 1, 0])
    np.testing.assert_allclose(top[0, :, :4], [[-0.5, -0.5, 1.5, 1.5], [-0.5, 0.5, 1.5, 2.5],
                                               [-0.5, 0.5, 1.5, 2.5]])  # fmt: skip


def test_registry_entries():
    names = detection.names()
    for version in ("yolov8", "yolo11", "yolo26"):
        assert {version + s for s in "nsmlx"} <= set(names)
        assert detection.family(version + "n") == "yolo"
    # The scale is the entry's defaults: a caller may build a thinner, shallower model.
    assert detection.options("yolo11n") == ["c3k", "depth", "max_channels", "width"]
    scale = {"depth": 0.5, "width": 0.5, "max_channels": 1024, "c3k": False}
    assert detection.defaults("yolo26s") == scale
    thin = detection.build("yolo26n", num_classes=4, width=0.125, depth=0.25)
    assert (thin.width, thin.depth, thin.max_channels) == (0.125, 0.25, 1024)
    model = detection.build("yolo11m", num_classes=4)
    assert (model.depth, model.width, model.max_channels, model.c3k) == (0.5, 1.0, 512, True)
    assert detection.class_outputs("yolov8n")[:3] == (
        "model_22/cv3_0_0",
        "model_22/cv3_0_1",
        "model_22/cv3_0_2",
    )
    assert len(detection.class_outputs("yolo26n")) == 30  # both branches, 5 modules x 3 levels
    assert (model.image_mean, model.image_std) == ((0.0,) * 3, (1.0,) * 3)
    with pytest.raises(UserError, match="num_classes counts the background"):
        detection.build("yolo11n", num_classes=1)
    with pytest.raises(UserError, match="has no option 'widht': choose from c3k, depth"):
        detection.build("yolo11n", num_classes=3, widht=0.5)
    assert detection.frozen_backbone(model)("model_0/conv/kernel") is False
    with pytest.raises(UserError, match="YOLO trains all its layers"):
        detection.frozen_backbone(model, 3)


def random_variables(model, images, seed=0):
    """Variables of `model` drawn in NumPy (kernels normal with variance 1 / fan-in, biases and
    BatchNorm offsets 0, scales and variances 1): real weights without compiling the model's
    init, a program as large as its training step."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), images)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = math.prod(leaf.shape[:-1])
            return rng.normal(0, fan_in**-0.5, leaf.shape).astype(leaf.dtype)
        return np.full(leaf.shape, name in ("scale", "var"), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.mark.slow
def test_outputs_train_with_the_yolo_loss():
    # yolo26n at 64 px with 2 classes, through jaxvision.tasks.yolo_loss's end-to-end loss:
    # the loss is finite, and the one-to-one branch's gradient reaches only its own towers.
    from jaxvision.tasks import yolo_loss

    model = detection.build("yolo26n", num_classes=3)
    images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    variables = random_variables(model, images)
    points, strides = yolo.anchor_points(detection.feature_shapes(model, 64, 64))
    truth = (
        points,
        strides,
        jnp.asarray([[0, 1], [1, 0]]),
        jnp.asarray([[[4.0, 4.0, 40.0, 30.0], [20.0, 10.0, 60.0, 62.0]]] * 2),
        jnp.asarray([[True, True], [True, False]]),
        (64, 64),
    )

    def one_to_one(params):
        out, _ = model.apply(
            {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
        )
        e2e = yolo_loss.end_to_end_loss(
            (out["boxes"], out["cls_logits"]),
            (out["one2one"]["boxes"], out["one2one"]["cls_logits"]),
            *truth,
            0,
            10,
            yolo_loss.YOLOLossOptions(reg_max=1),
        )
        return e2e.one_to_one.total, e2e.total

    (_, total), grads = jax.jit(jax.value_and_grad(one_to_one, has_aux=True))(variables["params"])
    assert np.isfinite(total) and total > 0
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        names = [p.key for p in path]
        if names[1].startswith("one2one_"):
            assert np.isfinite(g).all(), "/".join(names)
        else:
            assert not np.any(g), "/".join(names)
    assert np.any(grads["model_23"]["one2one_cv3_0_2"]["kernel"])
