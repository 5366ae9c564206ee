"""Mixup and CutMix over a whole batch on the device, jittable with fixed shapes.

Follows timm's `Mixup` in "batch" mode: one lambda and one box per batch, and example `i` is
mixed with example `B - 1 - i` (the batch reversed).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mixup_cutmix(
    rng: jax.Array,
    images: jax.Array,
    labels_onehot: jax.Array,
    *,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
) -> tuple[jax.Array, jax.Array, dict]:
    """Mixes the batch with its reverse by Mixup or CutMix, and the targets to match.

    With probability `prob` the batch is mixed, else returned as is (lam = 1). Mixing is CutMix
    with probability `switch_prob` (when both alphas are > 0; otherwise whichever is > 0), with
    lam ~ Beta(alpha, alpha) of the chosen method:
      - Mixup: images = lam * x + (1 - lam) * x[::-1].
      - CutMix: a box of sides int(H * sqrt(1 - lam)) and int(W * sqrt(1 - lam)) around a
        uniform centre, clipped to the image, is pasted from x[::-1]; lam becomes the share of
        the image left unpasted, 1 - box area / (H W).
    In both, targets = lam * y + (1 - lam) * y[::-1].

    The box is a mask built from iotas, so shapes never depend on the random draws. On a batch
    sharded over devices, reversing it moves every shard to its mirror device (one collective
    permute of the batch per step).

    Args:
        rng: PRNG key; the same key gives the same mixing.
        images: float [B, H, W, C] (integer images would round the blend: normalise first).
        labels_onehot: float [B, K], label smoothing already applied.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that method off.
        switch_prob: probability of CutMix rather than Mixup when both are on.
        prob: probability of mixing at all.

    Returns:
        images: [B, H, W, C], dtype of `images`.
        targets: [B, K], dtype of `labels_onehot`; rows sum to what the label rows sum to.
        info: {"lam": float32 scalar, the weight of the unreversed batch (1.0 when unmixed),
            "box": int32 [4], the pasted (y0, x0, y1, x1) with y1, x1 exclusive, or -1s
            when CutMix was not applied}.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, labels_onehot, {"lam": jnp.float32(1.0), "box": jnp.full(4, -1, jnp.int32)}
    _, height, width, _ = images.shape
    mix_key, switch_key, lam_key, y_key, x_key = jax.random.split(rng, 5)

    mix = jax.random.uniform(mix_key) < prob
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = jax.random.uniform(switch_key) < switch_prob
    else:
        use_cutmix = jnp.asarray(cutmix_alpha > 0)
    use_cutmix &= mix
    alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
    lam = jnp.where(mix, jax.random.beta(lam_key, alpha, alpha), 1.0).astype(jnp.float32)

    # timm's rand_bbox: centre uniform over the pixels, half-sides cut // 2, clipped.
    ratio = jnp.sqrt(1.0 - lam)
    half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
    half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
    cy = jax.random.randint(y_key, (), 0, height)
    cx = jax.random.randint(x_key, (), 0, width)
    y0, y1 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
    x0, x1 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
    rows = jnp.arange(height)
    cols = jnp.arange(width)
    in_box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    box_area = (y1 - y0) * (x1 - x0)
    lam = jnp.where(use_cutmix, 1.0 - box_area / (height * width), lam).astype(jnp.float32)

    # Per-pixel weight of the unreversed batch: lam everywhere (Mixup), or 0 in the box and 1
    # outside it (CutMix). One blend covers both; weights of exactly 0 and 1 copy pixels exactly.
    weight = jnp.where(use_cutmix, (~in_box).astype(jnp.float32), lam)
    weight = weight.astype(images.dtype)[None, :, :, None]
    images = weight * images + (1 - weight) * images[::-1]
    lam_y = lam.astype(labels_onehot.dtype)
    targets = lam_y * labels_onehot + (1 - lam_y) * labels_onehot[::-1]
    box = jnp.where(use_cutmix, jnp.stack([y0, x0, y1, x1]), -1).astype(jnp.int32)
    return images, targets, {"lam": lam, "box": box}
