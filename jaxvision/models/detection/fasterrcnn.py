"""Faster R-CNN (Ren et al., 2015) with an FPN, in torchvision's geometry: ResNet body → FPN
P2..P5 (+ a max-pooled P6) → RPN → proposals → multi-scale RoIAlign → TwoMLPHead → class
scores and class-specific boxes.

The detector proposes its own regions: `__call__` runs the RPN head, decodes and filters its
proposals (per level the best pre-NMS, NMS per level, the best post-NMS: `propose`) and pools
the box head's RoIs from them. In training the task passes `sample_rois`, which picks the RoIs
from the proposals and the ground truth (jaxvision.tasks.fasterrcnn_loss.sample_rois); in
evaluation the RoIs are the proposals. Losses and detections are in jaxvision.tasks.fasterrcnn_loss.

Submodules are named after torchvision's state dict: `backbone/...` is `backbone.body.*`,
`fpn/...` `backbone.fpn.*`, `rpn_head/{conv, cls_logits, bbox_pred}` `rpn.head.*`,
`box_head/{fc6, fc7}` `roi_heads.box_head.*`, `box_predictor/{cls_score, bbox_pred}`
`roi_heads.box_predictor.*`. With num_classes=91, `FasterRCNNResNet50` has torchvision's
fasterrcnn_resnet50_fpn parameter count: 41,755,286 with frozen backbone BatchNorm,
41,808,406 with trainable BatchNorm.
"""

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.models.detection.backbones import ResNetBody
from jaxvision.models.detection.fpn import FeaturePyramidNetwork
from jaxvision.models.detection.layers import anchors_last, check_norm
from jaxvision.models.resnet import PAD1, BasicBlock, Bottleneck
from jaxvision.ops.anchors import anchor_grid, anchors_per_level
from jaxvision.ops.boxes import BoxCoder, clip_boxes, remove_small_boxes_mask
from jaxvision.ops.nms import batched_nms
from jaxvision.ops.roi_align import multiscale_roi_align

ModuleDef = Any
RPN_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

# torchvision's RPNHead init: N(0, 0.01) kernels, zero biases.
rpn_kernel_init = nn.initializers.normal(0.01)
# torch.nn.Linear's default init (TwoMLPHead, FastRCNNPredictor): U(+-1/sqrt(fan_in)) for the
# kernel (kaiming-uniform with a = sqrt(5)) and the bias.
linear_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def _linear(features: int, fan_in: int, name: str, dtype) -> nn.Dense:
    bound = 1 / math.sqrt(fan_in)
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=linear_kernel_init,
        bias_init=lambda key, shape, dt: jax.random.uniform(key, shape, dt, -bound, bound),
        name=name,
    )


def propose(
    objectness: jax.Array,
    deltas: jax.Array,
    anchors: np.ndarray,
    num_anchors_per_level: Sequence[int],
    image_sizes: jax.Array,
    *,
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float = 0.7,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """torchvision RegionProposalNetwork.filter_proposals on a batch, fixed shapes.

    objectness: [B, A] logits; deltas: [B, A, 4] (RPN codes); anchors: [A, 4];
    num_anchors_per_level (static); image_sizes: [B, 2] (h, w). Per level the pre_nms_top_n
    best logits; decoded, clipped; boxes with a side < min_size or a probability <
    score_thresh dropped; NMS within each level at nms_thresh; the post_nms_top_n best.

    Returns (boxes [B, P, 4], probabilities [B, P], valid [B, P] bool), P = post_nms_top_n,
    valid rows first by descending probability, the rest zero.
    """
    anchors = jnp.asarray(anchors, jnp.float32)

    def image(logits, codes, size):
        indices, levels, start = [], [], 0
        for level, count in enumerate(num_anchors_per_level):
            _, top = jax.lax.top_k(logits[start : start + count], min(pre_nms_top_n, count))
            indices.append(start + top)
            levels.append(jnp.full(top.shape, level, jnp.int32))
            start += count
        index, level = jnp.concatenate(indices), jnp.concatenate(levels)
        boxes = clip_boxes(RPN_CODER.decode(codes[index], anchors[index]), size)
        scores = jax.nn.sigmoid(logits[index])
        valid = remove_small_boxes_mask(boxes, min_size) & (scores >= score_thresh)
        keep, kept = batched_nms(boxes, scores, level, nms_thresh, post_nms_top_n, valid)
        return (
            jnp.where(kept[:, None], boxes[keep], 0),
            jnp.where(kept, scores[keep], 0),
            kept,
        )

    objectness = jax.lax.stop_gradient(objectness.astype(jnp.float32))
    deltas = jax.lax.stop_gradient(deltas.astype(jnp.float32))
    return jax.vmap(image)(objectness, deltas, jnp.asarray(image_sizes))


class RPNHead(nn.Module):
    """torchvision's RPNHead: a shared 3x3 conv + ReLU, then 1x1 convs to num_anchors
    objectness logits (`cls_logits`) and 4 * num_anchors deltas (`bbox_pred`) per position.
    features: [[B, h, w, C]] → (objectness [B, A], deltas [B, A, 4]) float32, A over the
    levels in torchvision's order."""

    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Sequence[jnp.ndarray]):
        conv = functools.partial(
            nn.Conv,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=rpn_kernel_init,
            bias_init=nn.initializers.zeros,
        )
        shared = conv(features[0].shape[-1], (3, 3), padding=PAD1, name="conv")
        logits = conv(self.num_anchors, (1, 1), name="cls_logits")
        deltas = conv(4 * self.num_anchors, (1, 1), name="bbox_pred")
        objectness, regression = [], []
        for f in features:
            x = nn.relu(shared(f))
            objectness.append(anchors_last(logits(x), 1)[..., 0])
            regression.append(anchors_last(deltas(x), 4))
        return jnp.concatenate(objectness, axis=1), jnp.concatenate(regression, axis=1)


class FasterRCNN(nn.Module):
    """Faster R-CNN: ResNet C2..C5 → FPN P2..P5 + pool → RPN → RoIAlign → box head.

    Use the presets (`FasterRCNNResNet50` is torchvision's fasterrcnn_resnet50_fpn with the
    defaults) or `jaxvision.models.detection.build`. Collections: `params` and `batch_stats`.
    Anchors: one size per level, anchor_size * 2**l at level l (32 ... 512), each with every
    aspect ratio (`anchor_sizes()`, `anchor_aspect_ratios()`, `num_anchors()`). Proposals:
    rpn_pre_nms_top_n_* per level, rpn_post_nms_top_n_* per image (train / test). The box
    head pools roi_output_size^2 bins (roi_sampling_ratio samples per side) from P2..P5, each
    RoI from its FPN level (boxes of side roi_canonical_scale from P4).
    """

    family: ClassVar[str] = "fasterrcnn"
    image_mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    image_std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)
    class_outputs: ClassVar[tuple[str, ...]] = ("box_predictor",)

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int
    width: int = 64
    norm: str = "frozen"
    bn_eps: float = 1e-5  # 0.0 for torchvision's COCO file (its overwrite_eps)
    fpn_channels: int = 256
    anchor_size: float = 32  # at P2; doubles per level
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_score_thresh: float = 0.0
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    roi_canonical_scale: float = 224
    representation_size: int = 1024
    dtype: Any = jnp.float32

    def __post_init__(self):
        check_norm(self.norm)
        if len(self.stage_sizes) != 4:
            raise UserError(
                f"Faster R-CNN needs a 4-stage ResNet, got stage_sizes {self.stage_sizes}"
            )
        super().__post_init__()

    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        """AnchorGenerator `sizes`: ((32,), (64,), (128,), (256,), (512,)) by default."""
        return tuple((self.anchor_size * 2**i,) for i in range(5))

    def anchor_aspect_ratios(self) -> tuple[tuple[float, ...], ...]:
        return (tuple(self.aspect_ratios),) * 5

    def num_anchors(self) -> int:
        return len(self.aspect_ratios)

    @nn.compact
    def __call__(
        self,
        images: jnp.ndarray,
        train: bool = False,
        features: bool = False,
        image_sizes: jax.Array | None = None,
        sample_rois: Callable | None = None,
    ):
        """images: [B, H, W, 3] float (normalised); image_sizes: [B, 2] (h, w) of each image
        in its canvas (None: the whole canvas), what proposals are clipped to; sample_rois:
        (proposals [B, P, 4], valid [B, P]) → (rois [B, R, 4], rois_valid [B, R], extra
        outputs), in training. Returns {"objectness": [B, A], "rpn_box_regression": [B, A,
        4], "proposals", "proposals_valid", "rois", "rois_valid", "class_logits": [B, R, K],
        "box_regression": [B, R, 4K]} (float32) and sample_rois' extras. With `features`:
        the RPN's maps P2..P6, finest first, whose shapes place the anchors.
        """
        b, h, w, _ = images.shape
        body = ResNetBody(
            self.stage_sizes,
            self.block_cls,
            width=self.width,
            norm=self.norm,
            bn_eps=self.bn_eps,
            dtype=self.dtype,
            name="backbone",
        )(images, train)
        pyramid = FeaturePyramidNetwork(self.fpn_channels, dtype=self.dtype, name="fpn")(
            [body[f"C{level}"] for level in range(2, 6)]
        )
        # torchvision's LastLevelMaxPool: max_pool2d(P5, kernel 1, stride 2).
        pyramid = [*pyramid, pyramid[-1][:, ::2, ::2]]
        objectness, deltas = RPNHead(self.num_anchors(), dtype=self.dtype, name="rpn_head")(pyramid)
        shapes = [tuple(p.shape[1:3]) for p in pyramid]
        sizes, ratios = self.anchor_sizes(), self.anchor_aspect_ratios()
        if image_sizes is None:
            image_sizes = jnp.tile(jnp.array([h, w], jnp.int32), (b, 1))
        proposals, _, proposals_valid = propose(
            objectness,
            deltas,
            anchor_grid((h, w), shapes, sizes, ratios),
            anchors_per_level(shapes, sizes, ratios),
            image_sizes,
            pre_nms_top_n=self.rpn_pre_nms_top_n_train if train else self.rpn_pre_nms_top_n_test,
            post_nms_top_n=self.rpn_post_nms_top_n_train if train else self.rpn_post_nms_top_n_test,
            nms_thresh=self.rpn_nms_thresh,
            score_thresh=self.rpn_score_thresh,
        )
        rois, rois_valid, extras = proposals, proposals_valid, {}
        if sample_rois is not None:
            rois, rois_valid, extras = sample_rois(proposals, proposals_valid)
        pooled = multiscale_roi_align(
            pyramid[:4],
            rois,
            (h, w),
            self.roi_output_size,
            self.roi_sampling_ratio,
            canonical_scale=self.roi_canonical_scale,
        )
        x = pooled.reshape(*rois.shape[:2], -1).astype(self.dtype)
        x = TwoMLPHead(self.representation_size, dtype=self.dtype, name="box_head")(x)
        x = BoxHeadOutputs(self.num_classes, dtype=self.dtype, name="box_predictor")(x)
        if features:
            return pyramid
        return {
            "objectness": objectness,
            "rpn_box_regression": deltas,
            "proposals": proposals,
            "proposals_valid": proposals_valid,
            "rois": rois,
            "rois_valid": rois_valid,
            **x,
            **extras,
        }


class TwoMLPHead(nn.Module):
    """torchvision's TwoMLPHead: `fc6`, `fc7`, each a Linear + ReLU. x: [..., D] (pooled RoIs
    flattened channels last: torch's fc6 reads them channels first, which import permutes)."""

    representation_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        size = self.representation_size
        x = nn.relu(_linear(size, x.shape[-1], "fc6", self.dtype)(x))
        return nn.relu(_linear(size, size, "fc7", self.dtype)(x))


class BoxHeadOutputs(nn.Module):
    """torchvision's FastRCNNPredictor: `cls_score` (K logits) and `bbox_pred` (4K deltas)."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, fan_in = self.num_classes, x.shape[-1]
        return {
            "class_logits": _linear(k, fan_in, "cls_score", self.dtype)(x).astype(jnp.float32),
            "box_regression": _linear(4 * k, fan_in, "bbox_pred", self.dtype)(x).astype(
                jnp.float32
            ),
        }


FasterRCNNResNet18 = functools.partial(FasterRCNN, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
FasterRCNNResNet50 = functools.partial(FasterRCNN, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
