"""The YOLO COCO recipe (experiments/configs/detection/yolo11n_coco.py): COCO's 80 categories as
the reference's contiguous classes, the reference's yolo11n, its schedule; built abstractly."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from experiments import detection
from jaxvision import data
from jaxvision.data.coco import COCO_CATEGORY_NAMES, COCO_IDS, tfds_record
from jaxvision.errors import UserError
from tests.experiments.helpers import load_config

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "models", "fixtures")


def _coco_tree(root, category_ids):
    """A COCO-format tree of one image per split with one box of the last category."""
    categories = [{"id": int(i), "name": COCO_CATEGORY_NAMES[i]} for i in category_ids]
    os.makedirs(root / "annotations", exist_ok=True)
    for split in ("train2017", "val2017"):
        os.makedirs(root / split, exist_ok=True)
        Image.fromarray(np.full((48, 64, 3), 120, np.uint8)).save(root / split / "a.jpg")
        annotation = {"id": 1, "image_id": 1, "category_id": int(category_ids[-1])}
        annotation.update(bbox=[4, 4, 20, 10], iscrowd=0)
        data_ = {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
            "annotations": [annotation],
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data_))
    return root


def test_the_recipe_builds_the_references_yolo11n_on_cocos_80_classes(tmp_path):
    root = _coco_tree(tmp_path, COCO_IDS)
    config = load_config(
        "detection/yolo11n_coco.py", dataset="coco_json", data_dir=str(root), total_steps=500
    )
    run = detection.setup(config)
    with open(os.path.join(FIXTURES, "yolo_parameter_counts.json")) as f:
        reference = json.load(f)["yolo11n"]["trainable"]  # at the reference's nc=80
    params = run.abstract_state.models["model"].params
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == reference == 2_624_064
    assert run.class_names[1] == "person" and run.class_names[80] == "toothbrush"
    assert len(run.class_names) == 81
    # A straight line from 0.01 down to 0.01 x 0.01 at the last step (one image: no warmup).
    rates = [float(run.schedule(s)) for s in (0, 250, 500)]
    assert rates == pytest.approx([0.01, 0.00505, 1e-4])


def test_coco_labels_are_ids_or_contiguous(tmp_path):
    root = _coco_tree(tmp_path, [1, 18, 90])  # person, dog, toothbrush
    ids = data.open_dataset("coco_json", data_dir=str(root))
    assert ids.num_classes == 91 and int(ids.train[0]["classes"][0]) == 90
    packed = data.open_dataset("coco_json", data_dir=str(root), options={"labels": "contiguous"})
    assert packed.class_names == ("__background__", "person", "dog", "toothbrush")
    assert int(packed.train[0]["classes"][0]) == 3
    with pytest.raises(UserError, match="takes one option, labels='ids'.* got labels='packed'"):
        data.open_dataset("coco_json", data_dir=str(root), options={"labels": "packed"})
    # A config written for the shapes set keeps working on COCO: what COCO does not read is said.
    kept, note = data.sources.usable_options("coco/2017", {"num_train": 8, "labels": "ids"})
    assert kept == {"labels": "ids"}
    assert note == "dataset coco/2017 reads only labels: num_train ignored"


def test_tfds_coco_labels_map_to_ids_or_one_to_eighty():
    example = {
        "image": np.zeros((10, 20, 3), np.uint8),
        "image/id": 7,
        "objects": {
            "bbox": np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]], np.float32),
            "label": np.array([0, 79]),
            "is_crowd": np.array([0, 0]),
        },
    }
    assert tfds_record(example, 0)["classes"].tolist() == [1, 90]
    contiguous = np.arange(1, 81, dtype=np.int32)
    assert tfds_record(example, 0, contiguous)["classes"].tolist() == [1, 80]
