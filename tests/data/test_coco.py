"""COCO-format data: a tiny COCO json tree (labels, crowd, every bad input) and TFDS coco mocked."""

import json
import pathlib
import sys
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxvision.data import coco, open_dataset
from jaxvision.errors import UserError

CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]


def _image(path: pathlib.Path, width: int, height: int, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


def _json(path: pathlib.Path, images, annotations, categories=CATEGORIES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))


def _entry(image_id: int, file_name: str, width: int, height: int) -> dict:
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def _ann(ann_id: int, image_id: int, bbox, category: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox, **extra}


@pytest.fixture
def tree(tmp_path):
    """train2017/ (a.jpg 40x30, b.png 20x20 unannotated), images/c.jpg, d.jpg at the root; and a
    val split with one image."""
    _image(tmp_path / "train2017" / "a.jpg", 40, 30)
    _image(tmp_path / "train2017" / "b.png", 20, 20)
    _image(tmp_path / "images" / "c.jpg", 16, 12)
    _image(tmp_path / "d.jpg", 10, 10)
    _image(tmp_path / "val2017" / "e.jpg", 32, 24)
    images = [_entry(5, "a.jpg", 40, 30), _entry(6, "b.png", 20, 20)]
    images += [_entry(7, "c.jpg", 16, 12), _entry(9, "d.jpg", 10, 10)]
    annotations = [
        _ann(100, 5, [2, 3, 10, 5]),  # xywh -> (2, 3, 12, 8)
        _ann(101, 5, [0, 0, 40, 30], category=3, iscrowd=1, area=512.5),
        _ann(102, 7, [1.5, 2.0, 4.0, 6.0], category=3),
    ]
    _json(tmp_path / "annotations" / "instances_train2017.json", images, annotations)
    _json(
        tmp_path / "annotations" / "instances_val2017.json",
        [_entry(1, "e.jpg", 32, 24)],
        [_ann(1, 1, [30, 20, 10, 10])],  # reaches past the image: clipped to (30, 20, 32, 24)
    )
    return tmp_path


def _error(match: str, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        open_dataset("coco_json", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_labels_records_and_crowd(tree):
    ds = open_dataset("coco_json", data_dir=str(tree))
    # Ids >= 1 are the labels; id 2 is unused.
    assert ds.num_classes == 4 and ds.class_names == ("__background__", "cat", "N/A", "dog")
    assert (len(ds.train), len(ds.test), ds.image_size, ds.max_boxes) == (4, 1, None, 2)
    assert ds.skipped == ()
    a, b, c, d = (ds.train[i] for i in range(4))
    assert a["image"].shape == (30, 40, 3) and a["image"].dtype == np.uint8
    np.testing.assert_array_equal(a["boxes"], [[2, 3, 12, 8], [0, 0, 40, 30]])
    assert a["boxes"].dtype == np.float32
    assert a["classes"].tolist() == [1, 3] and a["classes"].dtype == np.int32
    assert a["iscrowd"].tolist() == [0, 1]
    np.testing.assert_array_equal(a["area"], [50, 512.5])  # the json's area, else the box's
    assert a["image_id"] == 5
    # An image without annotations is a record with no boxes.
    assert b["boxes"].shape == (0, 4) and b["classes"].shape == (0,) and b["image_id"] == 6
    # c.jpg is found under images/, d.jpg at the root.
    assert c["image"].shape == (12, 16, 3) and d["image"].shape == (10, 10, 3)
    np.testing.assert_allclose(c["boxes"], [[1.5, 2.0, 5.5, 8.0]])
    assert ds.train.paths[2].endswith("images/c.jpg") and ds.train.paths[3] == str(tree / "d.jpg")
    e = ds.test[0]
    np.testing.assert_array_equal(e["boxes"], [[30, 20, 32, 24]])
    assert ds.notes == (
        "instances_train2017.json: 4 images, 3 boxes (1 crowd), 2 images without boxes",
        "instances_val2017.json: 1 image, 1 box (0 crowd), 0 images without boxes, "
        "1 box clipped to their image",
        "category ids run to 3 for 2 categories: num_classes is 4 and the unused ids are named N/A",
    )


def test_zero_based_ids_shift_by_one(tmp_path):
    _image(tmp_path / "train" / "a.png", 8, 8)
    categories = [{"id": 0, "name": "zero"}, {"id": 1, "name": "one"}]
    for split in ("train", "val"):
        _json(
            tmp_path / "annotations" / f"instances_{split}.json",
            [_entry(1, "a.png", 8, 8)],
            [_ann(1, 1, [1, 1, 2, 2], category=0), _ann(2, 1, [0, 0, 4, 4], category=1)],
            categories,
        )
    (tmp_path / "val").symlink_to(tmp_path / "train")
    ds = open_dataset("coco_json", data_dir=str(tmp_path))
    assert ds.class_names == ("__background__", "zero", "one") and ds.num_classes == 3
    assert ds.train[0]["classes"].tolist() == [1, 2]
    assert "labels are category id + 1" in ds.notes[-1]


def test_left_out_images_clipped_and_dropped_boxes(tree):
    (tree / "images" / "c.jpg").unlink()  # missing
    (tree / "d.jpg").write_bytes(b"not an image")  # unreadable
    _image(tree / "train2017" / "b.png", 21, 20)  # not the json's 20x20
    path = tree / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"] += [
        _ann(103, 5, [-5, 25, 10, 10]),  # clipped to (0, 25, 5, 30)
        _ann(104, 5, [45, 0, 5, 5]),  # wholly outside: zero area after clipping
        _ann(105, 5, [3, 3, 0, 4]),  # zero width
    ]
    path.write_text(json.dumps(data))
    ds = open_dataset("coco_json", data_dir=str(tree))
    assert len(ds.train) == 1 and ds.train.image_ids.tolist() == [5]
    assert ds.skipped == (
        "train2017/b.png (image id 6 is 21x20, but the json says 20x20)",
        "train2017/c.jpg (missing)",  # the first place looked in
        "d.jpg (not an image)",
    )
    assert ds.notes[0] == (
        "instances_train2017.json: 1 image, 3 boxes (1 crowd), 0 images without boxes, "
        "3 images left out (see skipped), 1 box clipped to their image, "
        "2 boxes of zero area dropped"
    )
    np.testing.assert_array_equal(ds.train[0]["boxes"][-1], [0, 25, 5, 30])
    message = _error("3 image\\(s\\) of .* cannot be used", data_dir=str(tree), strict=True)
    assert "train2017/c.jpg (missing)" in message and "data_strict=False" in message


def _edit(tree, change) -> None:
    path = tree / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_bad_json_is_one_line_naming_the_file(tree):
    path = tree / "annotations" / "instances_train2017.json"
    path.write_text('{"images": [}')
    message = _error("not valid JSON", data_dir=str(tree))
    assert str(path) in message and "line 1 column 13" in message
    path.write_text("[]")
    _error("top level is a JSON list", data_dir=str(tree))
    path.write_text('{"images": []}')
    _error("no 'categories' list", data_dir=str(tree))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["annotations"][1].update(category_id=7), "annotation 101 has unknown "),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 100 refers to image id 99"),
        (lambda d: d["annotations"][2].update(bbox=[1, 2, -3, 4]), "annotation 102 has bbox"),
        (lambda d: d["annotations"][2].update(bbox=[1, 2, 3]), "annotation 102 has bbox"),
        (lambda d: d["annotations"][0].update(iscrowd=2), "annotation 100 has iscrowd 2"),
        (lambda d: d["images"][1].update(id=5), "image id 5 appears twice"),
        (lambda d: d["images"][0].pop("file_name"), "image 5 has no 'file_name'"),
        (lambda d: d["categories"].append({"id": 1, "name": "x"}), "category id 1 appears twice"),
        (lambda d: d["categories"][1].update(name="wolf"), "category id 3 is 'wolf' in"),
    ],
)
def test_bad_annotations(tree, change, match):
    _edit(tree, change)
    message = _error(match, data_dir=str(tree))
    assert "instances_train2017.json" in message


def test_layout_errors_and_held_out_split(tree):
    _error("needs data_dir")
    _error("has no annotations/ folder", data_dir=str(tree / "train2017"))
    _error("no .*instances_nope\\*.json \\(found instances_train2017.json, ", data_dir=str(tree),
           train_split="nope")  # fmt: skip
    _json(tree / "annotations" / "instances_train2014.json", [_entry(1, "a.jpg", 40, 30)], [])
    message = _error("2 annotation files match train_split='train'", data_dir=str(tree))
    assert "set train_split to one of 'train2014', 'train2017'" in message
    # A single export (no val json): test_fraction of its images are held out, by split_seed.
    (tree / "annotations" / "instances_val2017.json").unlink()
    (tree / "annotations" / "instances_train2014.json").unlink()
    ds = open_dataset("coco_json", data_dir=str(tree), test_fraction=0.5, split_seed=3)
    assert (len(ds.train), len(ds.test)) == (2, 2)
    ids = sorted(ds.train.image_ids.tolist() + ds.test.image_ids.tolist())
    assert ids == [5, 6, 7, 9] and "held out 2 of 4 images" in ds.notes[1]
    again = open_dataset("coco_json", data_dir=str(tree), test_fraction=0.5, split_seed=3)
    assert again.test.image_ids.tolist() == ds.test.image_ids.tolist()
    by_id = {int(i): ds.train[k] for k, i in enumerate(ds.train.image_ids)}
    if 5 in by_id:  # annotations travel with their image
        assert by_id[5]["classes"].tolist() == [1, 3]
    message = _error("no .*instances_test\\*.json", data_dir=str(tree), test_split="test")
    assert "test_split='default'" in message


# ---------------------------------------------------------------------------------------------
# TFDS coco


def test_category_mapping_is_cocos():
    assert len(coco.COCO_CATEGORY_NAMES) == 91 and coco.COCO_CATEGORY_NAMES.count("N/A") == 10
    assert len(coco.COCO_IDS) == 80 and len(set(coco.COCO_IDS.tolist())) == 80
    assert coco.COCO_IDS[[0, 11, 12, 79]].tolist() == [1, 13, 14, 90]  # 12 is unused
    assert coco.COCO_CATEGORY_NAMES[13] == "stop sign"


def _coco_metadata(data_dir: pathlib.Path, monkeypatch) -> None:
    """Writes what a prepared coco/2017 holds besides its records: dataset_info.json and
    features.json from TFDS's own coco builder (whose code needs TensorFlow only for a dtype)."""
    from tensorflow_datasets.core import splits as splits_lib
    from tensorflow_datasets.object_detection import coco as tfds_coco

    with monkeypatch.context() as patch:
        patch.setattr(tfds_coco, "tf", types.SimpleNamespace(int64=np.int64))
        builder = tfds.builder("coco/2017", data_dir=str(data_dir), file_format="array_record")
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_dir, dataset_name="coco", filetype_suffix="array_record"
    )
    builder.info.set_splits(
        splits_lib.SplitDict(
            [
                splits_lib.SplitInfo(
                    name=name, shard_lengths=[n], num_bytes=0, filename_template=template
                )
                for name, n in (("train", 2), ("validation", 1))
            ]
        )
    )
    pathlib.Path(builder.data_dir).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)


def _tfds_example(image_id: int, height: int, width: int, bbox, labels, crowd, area) -> dict:
    n = len(labels)
    return {
        "image": np.full((height, width, 3), image_id % 256, np.uint8),
        "image/filename": f"{image_id:012d}.jpg",
        "image/id": np.int64(image_id),
        "objects": {
            "bbox": np.asarray(bbox, np.float32).reshape(n, 4),
            "label": np.asarray(labels, np.int64),
            "is_crowd": np.asarray(crowd, bool),
            "area": np.asarray(area, np.int64),
            "id": np.arange(n, dtype=np.int64),
        },
    }


EXAMPLES = {
    "train": [
        _tfds_example(
            139,
            100,
            200,
            # (ymin, xmin, ymax, xmax) normalised; the last box has zero height.
            [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.4]],
            [0, 79, 11],
            [False, True, False],
            [3000, 20000, 0],
        ),
        _tfds_example(285, 50, 40, np.zeros((0, 4)), [], [], []),
    ],
    "validation": [_tfds_example(632, 64, 64, [[0.5, 0.25, 0.75, 1.0]], [12], [False], [700])],
}


def _as_data_source(self, split, decoders=None, **kwargs):
    return EXAMPLES[split]


def test_tfds_coco_records(tmp_path, monkeypatch):
    _coco_metadata(tmp_path, monkeypatch)
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_FILES,
        data_dir=str(tmp_path),
        as_data_source_fn=_as_data_source,
    ):
        ds = open_dataset("coco/2017", data_dir="/ignored/by/the/mock")
        versioned = open_dataset("coco/2017:1.1.0", data_dir="/ignored/by/the/mock")
    assert ds.num_classes == 91 and ds.class_names == coco.COCO_CATEGORY_NAMES
    assert (len(ds.train), len(ds.test), ds.image_size) == (2, 1, None)
    assert len(versioned.train) == 2
    first = ds.train[0]
    assert first["image"].shape == (100, 200, 3) and first["image_id"] == 139
    np.testing.assert_allclose(first["boxes"], [[40, 10, 120, 50], [0, 0, 200, 100]], rtol=1e-6)
    assert first["boxes"].dtype == np.float32
    assert first["classes"].tolist() == [1, 90] and first["classes"].dtype == np.int32
    assert first["iscrowd"].tolist() == [0, 1] and first["area"].tolist() == [3000, 20000]
    empty = ds.train[1]
    assert empty["boxes"].shape == (0, 4) and empty["classes"].shape == (0,)
    val = ds.test[0]
    np.testing.assert_allclose(val["boxes"], [[16, 32, 64, 48]])
    assert val["classes"].tolist() == [14] and val["image_id"] == 632
    assert "tensorflow" not in sys.modules  # read from the prepared files, not TFDS's code


def test_tfds_coco_not_prepared_downloads_nothing(tmp_path):
    with pytest.raises(UserError, match="is not prepared in") as info:
        open_dataset("coco/2017", data_dir=str(tmp_path))
    message = str(info.value)
    assert "tfds build coco/2017" in message and f"--data_dir={tmp_path}" in message
    assert "\n" not in message and not any(tmp_path.iterdir())
