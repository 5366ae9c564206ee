"""RoIAlign and multi-scale RoIAlign against torchvision in float64: outputs and the gradients
of the feature maps (tests/ops/conftest.py: stored fixtures, fresh cases where torch is)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import multiscale_roi_align, roi_align, roi_levels
from tests.ops.helpers import assert_close


@pytest.mark.slow
def test_roi_align_matches_torchvision(cases):
    for case in cases("roi_align"):
        with jax.enable_x64(True):
            features = jnp.asarray(case["features"])
            for s in case["settings"]:
                boxes = jnp.asarray(s["boxes"])
                label = (
                    f"size {s['output_size']} ratio {s['sampling_ratio']} aligned {s['aligned']}"
                )

                def pooled(f, s=s, boxes=boxes):
                    return roi_align(
                        f,
                        boxes,
                        tuple(int(v) for v in s["output_size"]),
                        float(s["spatial_scale"]),
                        int(s["sampling_ratio"]),
                        bool(s["aligned"]),
                    )

                out, vjp = jax.vjp(jax.jit(pooled), features)
                assert_close(out, s["output"], 1e-12, label=label)
                (grad,) = vjp(jnp.asarray(s["upstream"]))
                assert_close(grad, s["grad"], 1e-12, label=f"{label} grad")


def test_multiscale_roi_align_matches_torchvision(cases):
    for case in cases("multiscale_roi_align"):
        with jax.enable_x64(True):
            maps = [jnp.asarray(m) for m in case["maps"]]
            boxes = jnp.asarray(case["boxes"])
            size = tuple(int(v) for v in case["image_size"])
            levels = np.asarray(roi_levels(boxes, 2, 5))
            assert {0, 1, 2, 3} <= set(levels.ravel()), "the case should use every level"
            out, vjp = jax.vjp(
                jax.jit(lambda m, b=boxes, s=size: multiscale_roi_align(m, b, s)), maps
            )
            assert_close(out, case["output"], 1e-12, label="multiscale")
            grads = vjp(jnp.asarray(case["upstream"]))[0]
            for level, (ours, theirs) in enumerate(zip(grads, case["grads"], strict=True)):
                assert_close(ours, theirs, 1e-12, label=f"multiscale grad level {level}")


@pytest.mark.slow
def test_roi_align_reads_a_sample_on_the_far_edge():
    # Box [-1, -1, 6, 3] on a 4 x 4 map, aligned, one bin of 7 x 4 samples: the sixth column
    # of samples lands exactly on x = 4, the map's edge, which torchvision reads (at the
    # border); (i + 0.5) * 7 / 7 computed as a product with 1 / 7 lands beyond it. (The box
    # spills out of the map: the default max_grid, 5, would sample it more coarsely.)
    features = jnp.arange(1, 17, dtype=jnp.float32).reshape(1, 4, 4, 1)
    boxes = jnp.array([[[-1.0, -1.0, 6.0, 3.0]]])
    jitted = jax.jit(roi_align, static_argnums=(2, 3, 4, 5), static_argnames="max_grid")
    for pool in (roi_align, jitted):
        out = pool(features, boxes, 1, 1.0, -1, True, max_grid=16)
        np.testing.assert_allclose(np.asarray(out).ravel(), [4.714286], rtol=1e-6)


@pytest.mark.slow
def test_roi_align_on_integer_grids_matches_torchvision(cases):
    """Whole-pixel boxes: samples exactly on the map's edges, bin counts ceil(side / bins) of
    exact quotients (ceil(21 / 7) is 3, not 4)."""
    for case in cases("roi_align_grid"):
        for name in ("small", "large"):
            maps = case[name]
            for s in maps["settings"]:
                dtype = str(s["dtype"])
                options = (
                    int(s["output_size"]),
                    float(s["spatial_scale"]),
                    int(s["sampling_ratio"]),
                    bool(s["aligned"]),
                )
                with jax.enable_x64(dtype == "float64"):
                    # max_grid 16: the boxes reach beyond the maps (up to 10 samples a side).
                    out = jax.jit(
                        roi_align, static_argnums=(2, 3, 4, 5), static_argnames="max_grid"
                    )(
                        jnp.asarray(maps["features"], dtype),
                        jnp.asarray(maps["boxes"], dtype),
                        *options,
                        max_grid=16,
                    )
                    out = np.asarray(out)
                # Values up to 16 (small) and 256 (large): float32 rounding, or float64's.
                atol = (1e-12 if dtype == "float64" else 1e-6) * maps["features"].max()
                assert_close(out, s["output"], atol, label=f"{name} {options} {dtype}")


def test_roi_align_float32_and_batching():
    """float32 agrees with float64 to float32 rounding; each image reads only its own map."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 9, 11, 4)).astype(np.float32)
    boxes = np.array([[[1.0, 2.0, 15.0, 12.0], [0.0, 0.0, 22.0, 18.0]]] * 2, np.float32)
    # Jitted: run eagerly, each of roi_align's many small ops would compile on its own.
    pool = jax.jit(lambda f, b: roi_align(f, b, 5, 0.5, 2))
    out32 = pool(jnp.asarray(features), jnp.asarray(boxes))
    with jax.enable_x64(True):
        out64 = pool(jnp.asarray(features, jnp.float64), jnp.asarray(boxes, jnp.float64))
        out64 = np.asarray(out64)
    assert out32.dtype == jnp.float32 and out32.shape == (2, 2, 5, 5, 4)
    np.testing.assert_allclose(out32, out64, atol=1e-5)
    swapped = pool(jnp.asarray(features[::-1]), jnp.asarray(boxes))
    np.testing.assert_array_equal(swapped[0], out32[1])


def test_map_scales_rejects_non_power_of_two_maps():
    from jaxvision.ops.roi_align import map_scales

    assert map_scales([(64, 64), (32, 32)], (256, 256)) == [0.25, 0.125]
    with pytest.raises(ValueError, match="no single power-2 scale"):
        map_scales([(64, 16)], (256, 256))
