"""Full-size parity with torchvision's detectors: same weights, same input, same head outputs.

Needs torch and torchvision, so CI (without them) skips it; run it with

    /work/torchenv/bin/python -m pytest -q -s tests/weights/test_parity_detection.py

The input is what torchvision's transform hands the backbone (a normalised [1, 3, H, W]
batch, H and W multiples of 32 for RetinaNet, 300x300 for SSD): `model.head(model.backbone(x))`
is compared with our `apply`. Each case prints the max |difference| of cls_logits and
bbox_regression in float32 (and float64 where run) and the outputs' scale.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tvd = pytest.importorskip("torchvision.models.detection")

from torchvision.models import resnet50  # noqa: E402
from torchvision.models.detection._utils import overwrite_eps  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.ops import FrozenBatchNorm2d  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

from jaxvision.models import detection  # noqa: E402
from jaxvision.weights import import_weights  # noqa: E402

KEYS = ("cls_logits", "bbox_regression")


def randomise(model, calibrate, images, generator):
    """Random weights at scales that keep activations O(1), so the outputs depend on every
    layer (torchvision's N(0, 0.01) head init would hide the backbone): He-normal convs,
    N(0, 0.1) biases, BatchNorm affine U(0.5, 1.5) / N(0, 0.1) and statistics measured on
    `images` by `calibrate` (the body) in train mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch sets the statistics
            elif isinstance(module, tvd.ssd.SSDFeatureExtractorVGG):
                module.scale_weight.normal_(20, 2, generator=generator)
        if calibrate is not None:
            calibrate.train()
            calibrate(images)
    return model.eval()


def torch_heads(model, images):
    with torch.no_grad():
        return {k: v.numpy() for k, v in model.head(list(model.backbone(images).values())).items()}


def template(model, shape):
    """Variables shaped like model.init's (zeros; every one is overwritten by the import)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def compare(label, reference, images, model_name, build, *, x64=False):
    """Imports torch `reference`'s state dict into build(dtype), runs it on `images`, prints
    and checks the max |diff| of the head outputs; with `x64` also in float64 on both sides."""
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    expected = torch_heads(reference, images)
    expected64 = torch_heads(copy.deepcopy(reference).double(), images.double())
    x = images.permute(0, 2, 3, 1).numpy()
    model = build(jnp.float32)
    variables, kept = import_weights(model_name, state, template(model, x.shape))
    assert kept == []
    ours = jax.jit(model.apply)(variables, x)
    diffs = {k: float(np.abs(np.asarray(ours[k]) - expected[k]).max()) for k in KEYS}
    # float32 rounding alone moves torch's outputs this far from exact arithmetic.
    noise = {k: float(np.abs(expected[k] - expected64[k]).max()) for k in KEYS}
    scales = {k: float(np.abs(expected64[k]).max()) for k in KEYS}
    line = f"\n{label} float32: " + ", ".join(
        f"{k} max|diff| {diffs[k]:.3g} (torch's own float32 error {noise[k]:.3g}, "
        f"max|value| {scales[k]:.3g})"
        for k in KEYS
    )
    if x64:
        with jax.enable_x64(True):
            model64 = build(jnp.float64)
            variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
            ours64 = jax.jit(model64.apply)(variables64, x.astype(np.float64))
            diffs64 = {k: float(np.abs(np.asarray(ours64[k]) - expected64[k]).max()) for k in KEYS}
        line += "; float64: " + ", ".join(f"{k} {diffs64[k]:.3g}" for k in KEYS)
        # The heads return float32: one rounding of the float64 result is all that is left.
        assert all(d < 1e-6 * max(1, scales[k]) for k, d in diffs64.items()), diffs64
    print(line)
    for key in KEYS:
        assert ours[key].shape == expected[key].shape
        assert diffs[key] < max(1e-4 * max(1, scales[key]), 2 * noise[key]), (key, diffs[key])


@pytest.fixture(scope="module")
def retinanet():
    """torchvision's retinanet_resnet50_fpn from scratch (BatchNorm2d), randomised, and an
    input."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    calibration = torch.randn(2, 3, 320, 416, generator=generator)
    model = randomise(model, model.backbone.body, calibration, generator)
    images = torch.randn(1, 3, 320, 416, generator=generator)
    return model, images


def test_retinanet_resnet50_fpn_matches_torchvision(retinanet):
    model, images = retinanet
    compare(
        "retinanet_resnet50_fpn (BatchNorm2d)",
        model,
        images,
        "retinanet_resnet50_fpn",
        lambda dtype: detection.build(
            "retinanet_resnet50_fpn", num_classes=91, norm="batch", dtype=dtype
        ),
        x64=True,
    )


def test_retinanet_frozen_batch_norm_matches_torchvision(retinanet):
    """The pretrained-backbone configuration: FrozenBatchNorm2d with eps 0, as torchvision runs
    its COCO weights (overwrite_eps(model, 0.0)); its state dict has no num_batches_tracked."""
    trained, images = retinanet
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(
        body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    model = tvd.RetinaNet(backbone, 91)
    model.load_state_dict(trained.state_dict())
    overwrite_eps(model, 0.0)
    model.eval()
    assert not any(k.endswith("num_batches_tracked") for k in model.state_dict())
    compare(
        "retinanet_resnet50_fpn (FrozenBatchNorm2d, eps 0)",
        model,
        images,
        "retinanet_resnet50_fpn",
        lambda dtype: detection.build(
            "retinanet_resnet50_fpn", num_classes=91, bn_eps=0.0, dtype=dtype
        ),
    )


def test_ssd300_vgg16_matches_torchvision():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    model = tvd.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)
    model = randomise(model, None, None, generator)
    images = torch.randn(1, 3, 300, 300, generator=generator)
    compare(
        "ssd300_vgg16",
        model,
        images,
        "ssd300_vgg16",
        lambda dtype: detection.build("ssd300_vgg16", num_classes=91, dtype=dtype),
        x64=True,
    )


def test_retinanet_group_norm_head_matches_torchvisions_v2_head(retinanet):
    """head_norm="group": torchvision's RetinaNetHead with GroupNorm(32) after each tower conv
    (retinanet_resnet50_fpn_v2's head) on the same randomised backbone."""
    import functools

    trained, images = retinanet
    head = tvd.retinanet.RetinaNetHead(
        256, 9, 91, norm_layer=functools.partial(torch.nn.GroupNorm, 32)
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
    model = copy.deepcopy(trained)
    model.head = head
    model.eval()
    compare(
        "retinanet_resnet50_fpn, GroupNorm head (torchvision's v2 head)",
        model,
        images,
        "retinanet_resnet50_fpn",
        lambda dtype: detection.build(
            "retinanet_resnet50_fpn", num_classes=91, norm="batch", head_norm="group", dtype=dtype
        ),
    )
