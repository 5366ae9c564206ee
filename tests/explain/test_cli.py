"""`jaxvision explain` end to end: heat-map PNGs and raw .npy attributions per image and
method, the completeness line of Integrated Gradients, and one-line errors. The command runs
in this process (tests/explain/conftest.py: jaxvision); one fresh process checks what a user's
shell sees: the exit status and the last line of stderr."""

import os

import numpy as np
import pytest
from PIL import Image

from tests.experiments.helpers import run_tool
from tests.explain.conftest import jaxvision


@pytest.mark.slow  # its `resnet` fixture trains a digits ResNet (once per session)
def test_explain_writes_maps_and_attributions(resnet, digits_images, tmp_path, capsys):
    _, workdir = resnet
    images, labels = digits_images
    paths = []
    for i in range(2):
        path = str(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i][:, :, 0]).save(path)
        paths.append(path)
    out = str(tmp_path / "maps")
    code, stdout, stderr = jaxvision(
        capsys,
        "explain",
        f"--workdir={workdir}",
        "--images",
        *paths,
        "--method=gradcam,integrated_gradients",
        "--steps=32",
        f"--out={out}",
    )
    assert code == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert len(lines) == 4, stdout
    assert lines[0].startswith(f"{paths[0]}: gradcam of {labels[0]} (p=")
    assert "completeness error" in lines[2] and lines[2].endswith("digit0_integrated_gradients.png")
    for name in ("digit0", "digit1"):
        gradcam = np.load(os.path.join(out, f"{name}_gradcam.npy"))
        assert gradcam.shape == (4, 4) and gradcam.max() > 0  # C3 of the 8x8 ResNet
        ig = np.load(os.path.join(out, f"{name}_integrated_gradients.npy"))
        assert ig.shape == (8, 8, 1)
        picture = Image.open(os.path.join(out, f"{name}_gradcam.png"))
        assert picture.size == (2 * 224, 224 + 22)  # image and overlay, enlarged, captioned


@pytest.mark.slow  # one fresh process: imports and the model's programs
def test_explain_errors_are_one_line(resnet, tmp_path, capsys):
    _, workdir = resnet
    result = run_tool("explain", f"--workdir={workdir}", "--images", "nope.png")
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1] == "error: image nope.png not found: check the path"
    )
    path = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    code, _, stderr = jaxvision(
        capsys, "explain", f"--workdir={workdir}", "--images", path, "--method=lime"
    )
    assert code == 2 and "error: unknown method 'lime'" in stderr
