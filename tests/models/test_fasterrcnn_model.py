"""Faster R-CNN: torchvision's parameter counts, the registry entries, the training and
evaluation paths through the Detection task, and the weight converter's names and fc6 layout
(full-size parity: tests/weights/test_parity_fasterrcnn.py, torch only)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.tasks import fasterrcnn_loss
from jaxvision.tasks.detection import Detection
from jaxvision.train.state import abstract_params
from jaxvision.weights import export_weights, import_weights
from jaxvision.weights.torchvision_detection import _fc6_to_torch, _linear_to_flax


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("norm, expected", [("frozen", 41_755_286), ("batch", 41_808_406)])
def test_parameter_counts_are_torchvisions(norm, expected):
    model = detection.build("fasterrcnn_resnet50_fpn", num_classes=91, norm=norm)
    assert _count(abstract_params(model, (320, 416, 3))) == expected


def test_registry_and_bad_options():
    assert detection.family("fasterrcnn_resnet18_fpn_small") == "fasterrcnn"
    assert detection.class_outputs("fasterrcnn_resnet50_fpn") == ("box_predictor",)
    small = detection.build("fasterrcnn_resnet18_fpn_small", num_classes=4)
    assert (small.width, small.fpn_channels, small.representation_size) == (16, 64, 256)
    assert small.anchor_sizes() == ((16,), (32,), (64,), (128,), (256,))
    with pytest.raises(UserError, match="has no option 'head_convs'"):
        detection.build("fasterrcnn_resnet50_fpn", num_classes=91, head_convs=2)
    with pytest.raises(UserError, match="unknown norm"):
        detection.build("fasterrcnn_resnet50_fpn", num_classes=91, norm="group")


def _filled(abstract, seed=0):
    """init's structure filled by numpy (nothing compiled, nothing run op by op): He-scaled
    kernels so activations stay O(1), BatchNorm scales and variances near 1, small biases."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            values = rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
        elif name in ("scale", "var"):
            values = 1 + 0.2 * np.abs(rng.normal(size=leaf.shape))
        else:
            values = 0.1 * rng.normal(size=leaf.shape)
        return values.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _batch(rng, batch=2, canvas=64):
    xy = rng.uniform(0, 40, (batch, 3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 24, (batch, 3, 2))], -1)
    return {
        "image": rng.integers(0, 255, (batch, canvas, canvas, 3)).astype(np.uint8),
        "boxes": boxes.astype(np.float32),
        "classes": rng.integers(1, 4, (batch, 3)).astype(np.int32),
        "boxes_mask": np.array([[True, True, False], [False, False, False]]),
        "size": np.array([[64, 64], [48, 60]], np.int32),
    }


@pytest.mark.slow
def test_task_predicts_boxes_clipped_to_each_image():
    model = detection.build(
        "fasterrcnn_resnet18_fpn_small",
        num_classes=4,
        width=8,
        fpn_channels=16,
        representation_size=32,
        rpn_post_nms_top_n_train=40,
        rpn_post_nms_top_n_test=30,
    )
    options = dataclasses.replace(fasterrcnn_loss.FasterRCNNOptions(), box_batch_size_per_image=24)
    task = Detection(model, canvas=64, options=options)
    assert task.anchors.shape == (3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1), 4)
    batch = _batch(np.random.default_rng(0))
    variables = _filled(jax.eval_shape(task.init_variables(batch), jax.random.key(0)))
    # Its loss terms, their gradients in both stages and the BatchNorm updates: through the
    # training loop, tests/experiments/test_detection.py (one compiled training step for both).

    class State:
        pass

    state = State()
    state.variables = variables
    dets = jax.jit(lambda images, sizes: task.predict({"model": state}, images, sizes))(
        batch["image"], batch["size"]
    )
    assert dets["boxes"].shape == (2, 100, 4) and dets["classes"].dtype == jnp.int32
    # Clipped to each image's own size.
    assert float(dets["boxes"][1, :, 2].max()) <= 60 and float(dets["boxes"][1, :, 3].max()) <= 48


def test_weights_round_trip_and_fc6_layout():
    model = detection.build("fasterrcnn_resnet18_fpn_small", num_classes=4, width=8)
    variables = _filled(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    tensors = export_weights("fasterrcnn_resnet18_fpn_small", variables)
    assert "rpn.head.conv.0.0.weight" in tensors and "roi_heads.box_head.fc6.weight" in tensors
    assert tensors["roi_heads.box_predictor.bbox_pred.weight"].shape == (16, 256)
    again, kept = import_weights("fasterrcnn_resnet18_fpn_small", tensors, variables)
    assert kept == []
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    # torch's fc6 reads pooled RoIs flattened channels first: the same product as ours.
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(5, 3 * 2 * 2))  # [out, (C=3, 2, 2)]
    pooled = rng.normal(size=(3, 2, 2))  # torch's [C, S, S]
    tensors = {"backbone.fpn.layer_blocks.0.0.weight": np.zeros((3, 3, 3, 3))}
    kernel = _linear_to_flax(("box_head", "fc6"), weight, tensors)
    np.testing.assert_allclose(
        pooled.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ pooled.reshape(-1)
    )
    np.testing.assert_array_equal(_fc6_to_torch(kernel, 3), weight)
    # An old torchvision file (rpn.head.conv without Conv2dNormActivation) imports too.
    old = {
        k.replace("rpn.head.conv.0.0", "rpn.head.conv"): v
        for k, v in export_weights("fasterrcnn_resnet18_fpn_small", variables).items()
    }
    assert import_weights("fasterrcnn_resnet18_fpn_small", old, variables)[1] == []
