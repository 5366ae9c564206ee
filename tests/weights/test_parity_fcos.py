"""Full-size parity with torchvision's fcos_resnet50_fpn: same weights, same input, same head
outputs and the same final detections.

Needs torch and torchvision, so CI (without them) skips it; run it with

    /work/torchenv2/bin/python -m pytest -q -s tests/weights/test_parity_fcos.py

As tests/weights/test_parity_detection.py: a randomly initialised torchvision model (weights at
O(1) scale, GroupNorm affine too) is imported by its state dict, and `model.head(
model.backbone(x))` on a normalised [1, 3, 320, 416] batch is compared with our `apply`, in
float32 and float64; then torchvision's postprocess_detections on its outputs with our
jaxvision.tasks.fcos_loss.postprocess on ours (float64 on both sides, and float32). Each case prints
the max |difference| and the outputs' scale.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tvd = pytest.importorskip("torchvision.models.detection")

from torchvision.models import resnet50  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.ops import FrozenBatchNorm2d  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

from jaxvision.models import detection  # noqa: E402
from jaxvision.ops import anchor_grid  # noqa: E402
from jaxvision.tasks import fcos_loss  # noqa: E402
from jaxvision.weights import export_weights, import_weights  # noqa: E402
from tests.ops.helpers import assert_same_detections  # noqa: E402
from tests.weights.test_parity_detection import randomise, template  # noqa: E402

KEYS = ("cls_logits", "bbox_regression", "bbox_ctrness")
SIZE = (320, 416)


def torch_heads(model, images):
    with torch.no_grad():
        return model.head(list(model.backbone(images).values()))


def torch_detections(model, heads, images, score_thresh):
    """torchvision's FCOS.postprocess_detections on `heads`, padded as tests/ops compares."""
    from tests.ops.fixtures.make_ops_fixtures import _torch_detections

    with torch.no_grad():
        features = list(model.backbone(images).values())
        image_list = ImageList(images, [SIZE] * images.shape[0])
        anchors = model.anchor_generator(image_list, features)
        per_level = [f.shape[2] * f.shape[3] for f in features]
        split = {k: list(v.split(per_level, dim=1)) for k, v in heads.items()}
        split_anchors = [list(a.to(heads["cls_logits"].dtype).split(per_level)) for a in anchors]
        model.score_thresh = score_thresh
        dets = model.postprocess_detections(split, split_anchors, [SIZE] * images.shape[0])
    return anchors[0].numpy(), _torch_detections(dets, model.detections_per_img)


def compare(label, reference, images, build, score_thresh=0.2):
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    heads = torch_heads(reference, images)
    reference64 = copy.deepcopy(reference).double()
    heads64 = torch_heads(reference64, images.double())
    expected, expected64 = ({k: v.numpy() for k, v in h.items()} for h in (heads, heads64))
    x = images.permute(0, 2, 3, 1).numpy()
    model = build(jnp.float32)
    variables, kept = import_weights("fcos_resnet50_fpn", state, template(model, x.shape))
    assert kept == []
    # Export gives torchvision's state dict back: the same names, shapes and tensors.
    exported = export_weights("fcos_resnet50_fpn", variables)
    assert sorted(exported) == sorted(state)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):  # a counter jaxvision does not keep
            np.testing.assert_array_equal(exported[key], value, err_msg=key)

    ours = jax.jit(model.apply)(variables, x)
    with jax.enable_x64(True):
        model64 = build(jnp.float64)
        variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        ours64 = jax.jit(model64.apply)(variables64, x.astype(np.float64))
        ours64 = {k: np.asarray(v) for k, v in ours64.items()}
    line = f"\n{label}:"
    for key in KEYS:
        diff = float(np.abs(np.asarray(ours[key]) - expected[key]).max())
        noise = float(np.abs(expected[key] - expected64[key]).max())
        diff64 = float(np.abs(ours64[key] - expected64[key]).max())
        scale = float(np.abs(expected64[key]).max())
        line += (
            f"\n  {key}: float32 max|diff| {diff:.3g} (torch's own float32 error {noise:.3g}), "
            f"float64 {diff64:.3g}, max|value| {scale:.3g}"
        )
        assert ours[key].shape == expected[key].shape
        assert diff < max(1e-4 * max(1, scale), 2 * noise), (key, diff)
        assert diff64 < 1e-6 * max(1, scale), (key, diff64)

    # Final detections, each side post-processing its own head outputs.
    anchors, want64 = torch_detections(reference64, heads64, images.double(), score_thresh)
    _, want = torch_detections(reference, heads, images, score_thresh)
    features = detection.feature_shapes(model, *SIZE)
    ours_anchors = anchor_grid(SIZE, features, model.anchor_sizes(), model.anchor_aspect_ratios())
    np.testing.assert_array_equal(ours_anchors, anchors)
    levels = tuple(h * w for h, w in features)
    options = fcos_loss.FCOSOptions(score_thresh=score_thresh)
    sizes = np.array([SIZE], np.int32)
    post = jax.jit(lambda o, a: fcos_loss.postprocess(o, a, levels, sizes, options))
    with jax.enable_x64(True):
        got64 = jax.device_get(post(ours64, ours_anchors.astype(np.float64)))
    got = jax.device_get(post(ours, ours_anchors))
    count = int(want64["count"][0])
    assert count > 10
    assert_same_detections(got64, want64, 0, label=f"{label} detections float64 ({count})")
    line += f"\n  detections: {count} in float64, " + same_detections_float32(got, want)
    print(line)


def same_detections_float32(ours: dict, expected: dict) -> str:
    """Image 0's float32 detections equal as sets, each of ours paired with torchvision's of
    its class and nearest box: float32 rounding can swap the ranks of near-equal scores, which
    an order-based comparison would take for a difference. Returns the max differences."""
    count = int(expected["count"][0])
    assert int(np.sum(ours["valid"][0])) == count
    boxes, theirs = np.asarray(ours["boxes"][0][:count]), expected["boxes"][0][:count]
    classes, their_classes = np.asarray(ours["classes"][0][:count]), expected["classes"][0][:count]
    distance = np.abs(boxes[:, None] - theirs[None]).max(-1)
    distance[classes[:, None] != their_classes[None]] = np.inf
    pair = distance.argmin(1)
    assert sorted(pair) == list(range(count)), "one to one"
    box_diff = float(distance[np.arange(count), pair].max())
    score_diff = float(np.abs(ours["scores"][0][:count] - expected["scores"][0][pair]).max())
    # float32 head outputs differ by ~1e-5 (as torch's own float32 error), and a distance is
    # multiplied by the point's side (up to 128 px at P7) when decoded.
    assert box_diff < 0.05 and score_diff < 1e-4, (box_diff, score_diff)
    return f"float32 max|diff| boxes {box_diff:.3g}, scores {score_diff:.3g}"


@pytest.fixture(scope="module")
def fcos_batch():
    """torchvision's fcos_resnet50_fpn from scratch (BatchNorm2d), randomised, and an input."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(4)
    model = tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    calibration = torch.randn(2, 3, *SIZE, generator=generator)
    with torch.no_grad():
        for module in model.head.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
    model = randomise(model, model.backbone.body, calibration, generator)
    images = torch.randn(1, 3, *SIZE, generator=generator)
    return model, images


def test_fcos_resnet50_fpn_matches_torchvision(fcos_batch):
    model, images = fcos_batch
    assert sum(p.numel() for p in model.parameters()) == 32_322_720
    compare(
        "fcos_resnet50_fpn (BatchNorm2d)",
        model,
        images,
        lambda dtype: detection.build(
            "fcos_resnet50_fpn", num_classes=91, norm="batch", dtype=dtype
        ),
    )


def test_fcos_frozen_batch_norm_matches_torchvision(fcos_batch):
    """The pretrained-backbone configuration: FrozenBatchNorm2d (eps 1e-5: torchvision's FCOS
    keeps it), no num_batches_tracked in the state dict."""
    trained, images = fcos_batch
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(
        body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    model = tvd.FCOS(backbone, 91)
    model.load_state_dict(trained.state_dict())
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == 32_269_600
    # torchvision's trainable_backbone_layers=3 (what detection.frozen_backbone mirrors).
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 32_269_600 - 222_400
    compare(
        "fcos_resnet50_fpn (FrozenBatchNorm2d)",
        model,
        images,
        lambda dtype: detection.build("fcos_resnet50_fpn", num_classes=91, dtype=dtype),
    )
