"""Full-size parity with torchvision's fasterrcnn_resnet50_fpn: a randomised torchvision model's
weights imported, the same normalised input, each stage compared.

Needs torch and torchvision, so CI (without them) skips it; run it with

    /work/torchenv/bin/python -m pytest -q -s tests/weights/test_parity_fasterrcnn.py

Stages: the RPN head (objectness, deltas), the proposals (top-k and NMS on both sides: float32
rounding can swap boxes near the top-k cut or an NMS threshold, so the share of torchvision's
proposals we reproduce is reported and checked), then the box head and the final detections on
torchvision's proposals (passed to ours through `sample_rois`), so that stage is compared on
the same RoIs. Each prints its max |difference|.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tvd = pytest.importorskip("torchvision.models.detection")

from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.rpn import concat_box_prediction_layers  # noqa: E402

from jaxvision.models import detection  # noqa: E402
from jaxvision.tasks import fasterrcnn_loss  # noqa: E402
from jaxvision.weights import import_weights  # noqa: E402
from tests.weights.test_parity_detection import randomise, template  # noqa: E402

SIZE = (320, 416)


@pytest.fixture(scope="module")
def reference():
    """torchvision's fasterrcnn_resnet50_fpn from scratch (BatchNorm2d), randomised (Linear
    layers too, He-normal; the RPN's output convs at torchvision's init), its stage outputs on
    one image."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(4)
    model = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    calibration = torch.randn(2, 3, *SIZE, generator=generator)
    model = randomise(model, model.backbone.body, calibration, generator)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, (2 / module.weight.shape[1]) ** 0.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
        # RPN outputs at torchvision's own init scale, N(0, 0.01): logits of O(1) keep the
        # objectness probabilities apart (saturated ones tie, and ties order arbitrarily), and
        # small deltas keep the proposals near their anchors.
        for layer in (model.rpn.head.cls_logits, model.rpn.head.bbox_pred):
            layer.weight.normal_(0, 0.01, generator=generator)
    images = torch.randn(1, 3, *SIZE, generator=generator)
    with torch.no_grad():
        features = model.backbone(images)
        maps = list(features.values())
        objectness, deltas = concat_box_prediction_layers(*model.rpn.head(maps))
        image_list = ImageList(images, [SIZE])
        proposals, _ = model.rpn(image_list, features)
        pooled = model.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes)
        class_logits, box_regression = model.roi_heads.box_predictor(
            model.roi_heads.box_head(pooled)
        )
        detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    expected = {
        "objectness": objectness.reshape(1, -1).numpy(),
        "rpn_box_regression": deltas.reshape(1, -1, 4).numpy(),
        "proposals": proposals[0].numpy(),
        "class_logits": class_logits.numpy()[None],
        "box_regression": box_regression.numpy()[None],
        "detections": {k: v.numpy() for k, v in detections[0].items()},
    }
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return state, images.permute(0, 2, 3, 1).numpy(), expected


def _max_diff(ours, theirs):
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max())


def test_fasterrcnn_resnet50_fpn_matches_torchvision(reference):
    state, x, expected = reference
    model = detection.build("fasterrcnn_resnet50_fpn", num_classes=91, norm="batch")
    variables, kept = import_weights("fasterrcnn_resnet50_fpn", state, template(model, x.shape))
    assert kept == []
    ours = jax.jit(model.apply)(variables, x)
    lines = []
    for key in ("objectness", "rpn_box_regression"):
        diff, scale = _max_diff(ours[key], expected[key]), float(np.abs(expected[key]).max())
        lines.append(f"{key} max|diff| {diff:.3g} (max|value| {scale:.3g})")
        assert diff < 1e-4 * max(1.0, scale), (key, diff)

    # Proposals: the share of torchvision's that ours has (same box to 0.05 px: float32
    # deltas go through exp()).
    theirs = expected["proposals"]
    mine = np.asarray(ours["proposals"][0])[np.asarray(ours["proposals_valid"][0])]
    close = np.abs(theirs[:, None, :] - mine[None, :, :]).max(-1) < 0.05
    shared = close.any(1).mean()
    same_order = min(len(mine), len(theirs))
    prefix = np.abs(mine[:same_order] - theirs[:same_order]).max(-1) < 0.05
    first_swap = int(np.argmin(prefix)) if not prefix.all() else same_order
    lines.append(
        f"proposals: {len(mine)} ours, {len(theirs)} torchvision's, {shared:.2%} of theirs "
        f"reproduced, in the same order up to rank {first_swap}"
    )
    # Near-equal probabilities may swap places (float32): the set is what must agree.
    assert len(mine) == len(theirs) and shared > 0.99

    # The box head and detections on torchvision's proposals.
    rois = jnp.asarray(theirs)[None]
    inject = lambda p, v: (rois, jnp.ones(rois.shape[:2], bool), {})  # noqa: E731
    on_theirs = jax.jit(lambda v, x: model.apply(v, x, sample_rois=inject))(variables, x)
    for key in ("class_logits", "box_regression"):
        diff, scale = _max_diff(on_theirs[key], expected[key]), float(np.abs(expected[key]).max())
        lines.append(f"{key} max|diff| {diff:.3g} (max|value| {scale:.3g})")
        assert diff < 1e-4 * max(1.0, scale), (key, diff)
    dets = fasterrcnn_loss.postprocess(on_theirs, jnp.asarray([SIZE]))
    count = int(dets["valid"][0].sum())
    reference_dets = expected["detections"]
    assert count == len(reference_dets["scores"]), (count, len(reference_dets["scores"]))
    # As sets: saturated scores (1.0) tie, and ties may come in any order. Each of ours is
    # paired with torchvision's detection of its class nearest to it.
    boxes, scores = np.asarray(dets["boxes"][0, :count]), np.asarray(dets["scores"][0, :count])
    classes = np.asarray(dets["classes"][0, :count])
    gap = np.abs(boxes[:, None, :] - reference_dets["boxes"][None]).max(-1)
    gap = np.where(classes[:, None] == reference_dets["labels"][None], gap, np.inf)
    pair = np.argmin(gap, axis=1)
    assert len(set(pair.tolist())) == count, "two of ours paired with one of torchvision's"
    box_diff = float(gap[np.arange(count), pair].max())
    score_diff = _max_diff(scores, reference_dets["scores"][pair])
    lines.append(
        f"detections: {count} both, boxes max|diff| {box_diff:.3g} px, scores {score_diff:.3g}"
    )
    assert box_diff < 0.05 and score_diff < 1e-5
    print("\nfasterrcnn_resnet50_fpn (BatchNorm2d) float32: " + "; ".join(lines))
