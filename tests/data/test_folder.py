"""Damaged and odd files in a folder dataset: named when the folder opens, left out (or an
error with `strict`), and the odd-but-valid ones (16-bit PNGs) decoded right; images in
sub-folders of a class read as torchvision's ImageFolder reads them."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import files, open_dataset
from jaxvision.errors import UserError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _bomb(path) -> None:
    """A 30000x30000 PNG of a few bytes: its header alone says what it would cost to decode."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _damaged_folder(root):
    for c, name in enumerate(("cat", "dog")):
        os.makedirs(root / name)
        for i in range(4):
            pixels = np.full((16, 16, 3), 60 + 100 * c, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "cat" / "whole.jpg")  # mostly scan data
    jpeg = (root / "cat" / "whole.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 4 // 5])  # header intact
    (root / "cat" / "text.png").write_text("not a picture")
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "dog" / "broken.png").symlink_to(root / "nowhere.png")
    _bomb(root / "dog" / "bomb.png")
    return {
        "cat/cut.jpg": "truncated JPEG (no end marker)",
        "cat/text.png": "not an image",
        "cat/zero.jpg": "empty file",
        "dog/bomb.png": "decompression bomb",
        "dog/broken.png": "broken link",
    }


def test_unreadable_files_are_named_and_left_out(tmp_path):
    expected = _damaged_folder(tmp_path)
    ds = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.25)
    assert len(ds.skipped) == 5
    for entry, (path, why) in zip(sorted(ds.skipped), sorted(expected.items()), strict=True):
        assert entry.startswith(path) and why in entry
    paths = ds.train.paths + ds.test.paths
    assert len(paths) == 9 and not any(
        os.path.basename(p) in ("cut.jpg", "bomb.png") for p in paths
    )
    for source in (ds.train, ds.test):  # everything left decodes
        for i in range(len(source)):
            assert source[i]["image"].shape[2] == 3

    with pytest.raises(UserError) as info:
        open_dataset("folder", data_dir=str(tmp_path), strict=True)
    message = str(info.value)
    assert message.startswith(f"5 unreadable image file(s) under {tmp_path}: cat/cut.jpg")
    assert "\n" not in message and "data_strict=False" in message


def test_a_class_left_empty_by_unreadable_files_is_an_error(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "0.png")
    (tmp_path / "b" / "0.png").write_text("no")
    with pytest.raises(UserError, match=r"no .jpg/.jpeg/.png images once the unreadable ones"):
        open_dataset("folder", data_dir=str(tmp_path))


def test_one_class_is_refused(tmp_path):
    os.makedirs(tmp_path / "only")
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(UserError, match="one class folder .only.: a classifier needs at least two"):
        open_dataset("folder", data_dir=str(tmp_path))


def test_a_decode_failure_names_the_file(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 4] = b"\xff" * 4
    path.write_bytes(bytes(data))
    assert files.image_problem(str(path)) is None  # looks whole without decoding
    with pytest.raises(UserError, match=f"cannot decode image {path} .*remove or replace"):
        files.load_image(str(path))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = files.load_image(str(tmp_path / "deep.png"))
    assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
    expected = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(pixels[..., 0], expected)
    assert (pixels == 255).mean() < 0.01  # PIL's own conversion: 99.6% white
    gray = files.load_image(str(tmp_path / "deep.png"), channels=1)
    np.testing.assert_array_equal(gray[..., 0], expected)


def _pngs(folder, count, value=0, prefix=""):
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (value, value, value)).save(folder / f"{prefix}{i:02d}.png")


def test_images_in_sub_folders_belong_to_their_class(tmp_path):
    # 12 + 30 images of class a (30 two folders down), 12 of b: all 54 are read.
    _pngs(tmp_path / "a", 12)
    _pngs(tmp_path / "a" / "sub" / "deeper", 30, 50)
    _pngs(tmp_path / "b", 12, 200)
    ds = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.25)
    assert ds.class_names == ("a", "b")
    labels = list(ds.train.labels) + list(ds.test.labels)
    assert (labels.count(0), labels.count(1)) == (42, 12)
    assert (len(ds.train), len(ds.test)) == (41, 13)  # round(42 / 4) = 10 and 3 held out
    deep = [p for p in ds.train.paths + ds.test.paths if "deeper" in p]
    assert len(deep) == 30


def test_sub_folders_are_listed_in_image_folders_order(tmp_path):
    # torchvision's make_dataset: sorted(os.walk(class folder)), so folders by path string
    # ("sub-x" before "sub/deeper": "-" sorts before "/"), each folder's files by name
    # (case-sensitive). Hidden folders are skipped (ImageFolder reads them); a link back up
    # is followed once, not forever.
    for split in ("train", "val"):
        for name in ("a/sub/deeper", "a/sub-x", "a/.hidden", "b"):
            os.makedirs(tmp_path / split / name)
        for name in ("a/x", "a/B", "a/sub/y", "a/sub-x/z", "a/sub/deeper/w", "a/.hidden/h", "b/q"):
            Image.new("RGB", (8, 8)).save(tmp_path / split / f"{name}.png")
        (tmp_path / split / "a" / "sub" / "loop").symlink_to(tmp_path / split / "a")
    ds = open_dataset("folder", data_dir=str(tmp_path))
    listed = [os.path.relpath(p, tmp_path / "train") for p in ds.train.paths]
    assert listed == [
        "a/B.png",
        "a/x.png",
        "a/sub/y.png",
        "a/sub-x/z.png",
        "a/sub/deeper/w.png",
        "b/q.png",
    ]
    assert ds.train.labels == (0, 0, 0, 0, 0, 1) and len(ds.test) == 6


def test_a_train_folder_without_a_held_out_folder_is_refused(tmp_path):
    # Read recursively, train/ would be one class holding every image.
    _pngs(tmp_path / "train" / "cat", 2)
    _pngs(tmp_path / "train" / "dog", 2)
    _pngs(tmp_path / "other", 2)
    with pytest.raises(
        UserError, match=r"train holds class folders but .* has no held-out folder next to it"
    ):
        open_dataset("folder", data_dir=str(tmp_path))
