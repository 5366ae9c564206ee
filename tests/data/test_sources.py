"""open_dataset: digits, image folders and TFDS (mocked and a real tiny array_record build)."""

import collections
import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxvision.data import open_dataset
from jaxvision.data.sources import GRAY_MEAN, IMAGENET_MEAN
from jaxvision.errors import UserError


def _files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _user_error(match: str, **kwargs) -> str:
    """Opens a dataset that must fail; returns the message after checking it is one line."""
    with pytest.raises(UserError, match=match) as info:
        open_dataset(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_sizes_types_and_metadata():
    ds = open_dataset("digits")
    assert len(ds.train) + len(ds.test) == 1797
    assert len(ds.test) >= 0.2 * 1797
    item = ds.train[0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (8, 8, 1)
    assert isinstance(item["label"], int) and 0 <= item["label"] < 10
    assert (ds.num_classes, ds.image_size) == (10, 8)
    assert ds.class_names == tuple(str(i) for i in range(10))
    images = np.stack([ds.train[i]["image"] for i in range(len(ds.train))])
    # 0..16 scaled to 0..255: the brightest digit pixels reach 255.
    assert images.max() == 255 and images.min() == 0
    np.testing.assert_allclose(ds.mean, [images.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [images.std()], rtol=1e-6)


def test_digits_split_is_stratified():
    ds = open_dataset("digits", test_fraction=0.25)
    train = collections.Counter(ds.train[i]["label"] for i in range(len(ds.train)))
    test = collections.Counter(ds.test[i]["label"] for i in range(len(ds.test)))
    for label in range(10):
        total = train[label] + test[label]
        assert abs(test[label] - 0.25 * total) <= 1, (label, test[label], total)


def test_digits_split_is_deterministic_and_seeded():
    def test_images(seed):
        ds = open_dataset("digits", split_seed=seed)
        return np.stack([ds.test[i]["image"] for i in range(len(ds.test))])

    np.testing.assert_array_equal(test_images(0), test_images(0))
    assert not np.array_equal(test_images(0), test_images(1))


def test_digits_rejects_bad_fraction():
    _user_error("test_fraction", name="digits", test_fraction=1.5)


# ---------------------------------------------------------------------------------------------
# folder


def _write_images(class_dir: pathlib.Path, count: int, *, gray: bool = False) -> None:
    class_dir.mkdir(parents=True)
    rng = np.random.default_rng(len(class_dir.name) + count)
    for i in range(count):
        height, width = 10 + 3 * i, 20 - 2 * i
        if gray:
            image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        else:
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        # Mixed formats and upper-case extensions must all count.
        suffix = [".png", ".jpg", ".JPEG", ".PNG", ".jpeg"][i % 5]
        image.save(class_dir / f"img{i}{suffix}")
    (class_dir / "notes.txt").write_text("not an image")


def test_folder_classes_sorted_and_split_per_class(tmp_path):
    for name in ("zebra", "ant", "Bee"):
        _write_images(tmp_path / name, 5, gray=name == "Bee")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    ds = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.2)
    assert ds.class_names == ("Bee", "ant", "zebra")
    assert ds.num_classes == 3 and ds.image_size is None
    assert ds.mean == IMAGENET_MEAN
    # round(5 * 0.2) = 1 held-out image per class.
    assert (len(ds.train), len(ds.test)) == (12, 3)
    assert sorted(ds.test[i]["label"] for i in range(3)) == [0, 1, 2]
    for source in (ds.train, ds.test):
        for i in range(len(source)):
            item = source[i]
            image = item["image"]
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[:2] in [(10 + 3 * k, 20 - 2 * k) for k in range(5)]
    again = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.2)
    assert again.test.paths == ds.test.paths and again.train.labels == ds.train.labels
    other = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.2, split_seed=3)
    assert sorted(other.test.paths + other.train.paths) == sorted(ds.test.paths + ds.train.paths)


def test_folder_larger_fraction(tmp_path):
    for name in ("a", "b"):
        _write_images(tmp_path / name, 10)
    ds = open_dataset("folder", data_dir=str(tmp_path), test_fraction=0.3)
    assert (len(ds.train), len(ds.test)) == (14, 6)


def test_folder_train_val_layout(tmp_path):
    for name, count in (("a", 4), ("b", 3)):
        _write_images(tmp_path / "train" / name, count)
    for name, count in (("a", 2), ("b", 1)):
        _write_images(tmp_path / "val" / name, count)
    ds = open_dataset("folder", data_dir=str(tmp_path))
    assert ds.class_names == ("a", "b")
    assert (len(ds.train), len(ds.test)) == (7, 3)
    assert [ds.test[i]["label"] for i in range(3)] == [0, 0, 1]
    assert all("/val/" in p for p in ds.test.paths)


def test_folder_errors(tmp_path):
    _user_error("needs data_dir", name="folder")
    message = _user_error("does not exist", name="folder", data_dir=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in message
    (tmp_path / "file.txt").write_text("x")
    _user_error("is not a directory", name="folder", data_dir=str(tmp_path / "file.txt"))
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "loose.png")
    _user_error("no class folders in", name="folder", data_dir=str(tmp_path / "flat"))
    _write_images(tmp_path / "root" / "full", 2)
    (tmp_path / "root" / "empty").mkdir()
    message = _user_error(
        "with no .jpg/.jpeg/.png images", name="folder", data_dir=str(tmp_path / "root")
    )
    assert str(tmp_path / "root" / "empty") in message


# ---------------------------------------------------------------------------------------------
# TFDS


def test_tfds_cifar10_mocked(mock_tfds):
    ds = open_dataset("cifar10", data_dir="/unused")
    assert (ds.num_classes, ds.image_size, len(ds.train), len(ds.test)) == (10, 32, 6, 6)
    assert len(ds.class_names) == 10
    item = ds.train[0]
    assert set(item) == {"image", "label"}
    assert item["image"].dtype == np.uint8 and item["image"].shape == (32, 32, 3)
    assert isinstance(item["label"], int) and 0 <= item["label"] < 10


def test_tfds_imagenet_and_mnist_mocked(mock_tfds):
    ds = open_dataset("imagenet2012", test_split="validation")
    assert ds.num_classes == len(ds.class_names) == 1000
    assert ds.image_size is None and ds.mean == IMAGENET_MEAN
    image = ds.test[3]["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ds = open_dataset("mnist")
    assert ds.train[0]["image"].shape == (28, 28, 1)
    assert (ds.image_size, ds.mean) == (28, GRAY_MEAN)


def test_tfds_not_prepared_downloads_nothing(tmp_path):
    message = _user_error("tfds build cifar10", name="cifar10", data_dir=str(tmp_path))
    assert f"--data_dir={tmp_path}" in message and "--file_format=array_record" in message
    message = _user_error("is not prepared", name="imagenet2012", data_dir=str(tmp_path))
    assert f"{tmp_path}/downloads/manual" in message and "tfds build imagenet2012" in message
    assert _files_under(tmp_path) == []


def test_tfds_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    message = _user_error("tfds build mnist", name="mnist")
    assert f"--data_dir={tmp_path}" in message
    assert _files_under(tmp_path) == []


def test_unknown_dataset():
    message = _user_error("unknown dataset 'xyz'", name="xyz")
    assert "'digits'" in message and "'folder'" in message and "imagenet2012" in message


class JaxvisionTinyTest(tfds.core.GeneratorBasedBuilder):
    """Nine 6x6x1 examples; a Tensor feature because encoding an Image feature needs TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Tensor(shape=(6, 6, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 6), "test": self._generate_examples(6, 9)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": np.full((6, 6, 1), i, np.uint8), "label": i % 3}


def _build_tiny(data_dir: pathlib.Path) -> None:
    JaxvisionTinyTest(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_real_array_record(tmp_path):
    _build_tiny(tmp_path)
    ds = open_dataset("jaxvision_tiny_test", data_dir=str(tmp_path))
    assert (len(ds.train), len(ds.test), ds.num_classes, ds.image_size) == (6, 3, 3, 6)
    assert ds.class_names == ("a", "b", "c")
    # The default test split falls back to "test" when there is no "validation".
    values = sorted(int(ds.test[i]["image"][0, 0, 0]) for i in range(3))
    assert values == [6, 7, 8]
    item = ds.train[0]
    assert item["image"].dtype == np.uint8 and item["image"].shape == (6, 6, 1)
    assert item["label"] == int(item["image"][0, 0, 0]) % 3
    _user_error(
        "cannot open split 'nope'",
        name="jaxvision_tiny_test",
        data_dir=str(tmp_path),
        test_split="nope",
    )
    assert "tensorflow" not in sys.modules


def test_tfds_wrong_file_format(tmp_path):
    _build_tiny(tmp_path)
    (info_path,) = tmp_path.rglob("dataset_info.json")
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    message = _user_error("stored as tfrecord", name="jaxvision_tiny_test", data_dir=str(tmp_path))
    assert "tfds convert_format" in message and "--out_file_format=array_record" in message


TINY_SHAPES = pathlib.Path(__file__).parent / "fixtures" / "tfds"  # make_tfds_fixture.py


def test_tfds_labels_are_read_without_decoding_images(monkeypatch):
    """Class weights count a TFDS split's labels: the images (PNG here) stay encoded."""
    ds = open_dataset("tiny_shapes", data_dir=str(TINY_SHAPES))
    assert (len(ds.train), ds.class_names, ds.image_size) == (12, ("dark", "mid", "bright"), 8)
    in_order = [ds.train[i]["label"] for i in range(len(ds.train))]  # decodes every image

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(tfds.features.Image, "decode_example_np", no_decoding)
    fresh = open_dataset("tiny_shapes", data_dir=str(TINY_SHAPES))
    assert fresh.train.labels.tolist() == in_order
    assert np.bincount(fresh.train.labels).tolist() == [6, 4, 2]
    with pytest.raises(AssertionError, match="decoded"):
        fresh.train[0]  # the patch is live: the labels really skipped it
    assert "tensorflow" not in sys.modules
