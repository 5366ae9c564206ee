"""Image blending: the pyramid equals OpenCV's, collapse inverts it, blends by hand, the command."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxvision import blending
from jaxvision.commands.blend import blend
from jaxvision.errors import UserError
from tests.experiments.helpers import run_tool

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "blending_expected.npz")


def test_pyramid_steps_equal_opencvs():
    expected = np.load(FIXTURES)  # tests/fixtures/make_blending_fixtures.py
    for name in ("odd", "even"):
        np.testing.assert_allclose(
            blending.pyr_down(expected[name]), expected[f"{name}_down"], atol=1e-9
        )
    np.testing.assert_allclose(
        blending.pyr_up(expected["even"], (24, 32)), expected["even_up"], atol=1e-9
    )


def test_collapse_inverts_the_laplacian_pyramid():
    image = np.random.default_rng(0).uniform(0, 255, (37, 50, 3))
    pyramid = blending.laplacian_pyramid(image, 4)
    assert [p.shape[:2] for p in pyramid] == [(37, 50), (19, 25), (10, 13), (5, 7)]
    np.testing.assert_allclose(blending.collapse(pyramid), image, atol=1e-9)


def test_alpha_blend_by_hand():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(2))
    out = blending.alpha_blend(a, b, 0.25)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round(0.25 * a + 0.75 * b).astype(np.uint8))
    mask = np.zeros((6, 5))
    mask[:, :2] = 1
    out = blending.alpha_blend(a, b, mask)
    np.testing.assert_array_equal(out[:, :2], a[:, :2])
    np.testing.assert_array_equal(out[:, 2:], b[:, 2:])


def test_laplacian_blend_joins_without_a_step():
    a = np.full((64, 64, 3), 200, np.uint8)
    b = np.zeros((64, 64, 3), np.uint8)
    np.testing.assert_array_equal(blending.laplacian_blend(a, b, np.ones((64, 64))), a)
    out = blending.laplacian_blend(a, b, blending.half_mask(a.shape, "vertical")).astype(int)
    # Far from the seam each image is itself; across it the 200-level step becomes a ramp.
    assert (out[:, :8] == 200).all() and (out[:, -8:] == 0).all()
    steps = np.abs(np.diff(out[32, :, 0]))
    assert steps.max() < 60 and (np.diff(out[32, :, 0]) <= 0).all()
    hard = blending.alpha_blend(a, b, blending.half_mask(a.shape)).astype(int)
    assert np.abs(np.diff(hard[32, :, 0])).max() == 200


@pytest.mark.slow
def test_blend_command_and_its_errors(tmp_path):
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    out = tmp_path / "out.png"
    result = run_tool(
        "blend",
        f"--a={tmp_path / 'a.png'}",
        f"--b={tmp_path / 'b.png'}",
        f"--out={out}",
        "--seam=horizontal",
        check=True,
    )
    assert "wrote" in result.stdout and Image.open(out).size == (60, 40)
    with pytest.raises(UserError, match="image .*nope.png not found"):
        blend(str(tmp_path / "nope.png"), str(tmp_path / "b.png"), "laplacian")
    with pytest.raises(UserError, match="--alpha=1.5 must be in"):
        blend(str(tmp_path / "a.png"), str(tmp_path / "b.png"), "alpha", alpha=1.5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: blending.alpha_blend(np.zeros((4, 4)), np.zeros((4, 5))), "differ in shape"),
        (
            lambda: blending.laplacian_blend(np.zeros((4, 4)), np.zeros((4, 4)), np.ones((3, 4))),
            "does not cover",
        ),
        (lambda: blending.half_mask((4, 4), "diagonal"), "unknown seam direction"),
    ],
)
def test_bad_inputs_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
