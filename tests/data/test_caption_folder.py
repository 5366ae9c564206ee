"""The "captions" dataset: captions.jsonl folders and COCO captions JSON, checked when opened."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import EvalTransform, eval_batches, open_dataset
from jaxvision.data.tokenizers import WordTokenizer
from jaxvision.errors import UserError


def _image(path: pathlib.Path, value: int, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 0, 0)).save(path)


def _jsonl(path: pathlib.Path, entries, extra_lines=()) -> None:
    lines = [json.dumps(e) for e in entries] + list(extra_lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _open(root, **kwargs):
    return open_dataset("captions", data_dir=str(root), **kwargs)


def test_one_jsonl_holds_out_images_with_their_captions(tmp_path):
    entries = []
    for k in range(10):
        _image(tmp_path / "images" / f"{k}.png", 20 * k)
        entries.append({"file": f"images/{k}.png", "text": f"picture number {k}"})
        if k % 3 == 0:
            entries.append({"file": f"images/{k}.png", "text": f"  another of {k} "})
    _jsonl(tmp_path / "captions.jsonl", entries[:5], [""] + [json.dumps(e) for e in entries[5:]])
    ds = _open(tmp_path, test_fraction=0.3, split_seed=1)
    train, test = ds.train, ds.test
    assert (len(train.paths), len(test.paths)) == (7, 3)
    assert len(train) + len(test) == 14 and ds.num_classes == 0 and ds.skipped == ()
    # Every image's captions are in the split of its image, in file order.
    for source in (train, test):
        for row, path in enumerate(source.paths):
            k = int(pathlib.Path(path).stem)
            want = [f"picture number {k}"] + ([f"another of {k}"] if k % 3 == 0 else [])
            assert source.captions_of(row) == want
    record = test[0]
    assert sorted(record) == ["image", "image_index", "text", "tokens"]
    image = np.asarray(record["image"])
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8
    k = int(pathlib.Path(test.paths[record["image_index"]]).stem)
    assert image[0, 0, 0] == 20 * k and record["text"] == f"picture number {k}"
    # Without a tokenizer: a word vocabulary of the training captions, sorted.
    words = train.tokenizer.words
    assert words == tuple(sorted(set(" ".join(train.texts).split())))
    assert record["tokens"].dtype == np.int32 and record["tokens"].shape == (32,)
    assert train.tokenizer.decode(train[0]["tokens"]) == train[0]["text"]
    assert ds.notes == (
        f"held out 3 of 10 images of {tmp_path / 'captions.jsonl'} with their captions for "
        "testing (test_fraction 0.3, split_seed 1)",
        f"tokens: a word vocabulary of {len(words)} words from the captions",
    )
    again = _open(tmp_path, test_fraction=0.3, split_seed=1)
    assert again.test.paths == test.paths and again.test.texts == test.texts
    # Batches: texts as strings beside the tokens.
    batches = list(eval_batches(test, EvalTransform(8, 1.0), global_batch_size=4))
    real = [t for b in batches for t, m in zip(b["text"], b["mask"], strict=True) if m]
    assert real == list(test.texts)
    assert batches[0]["tokens"].shape == (4, 32) and batches[0]["image"].shape == (4, 8, 8, 3)


def test_train_and_val_folders_and_a_named_tokenizer(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for k in range(count):
            _image(tmp_path / split / f"{k}.jpg", 10 * k)
        _jsonl(
            tmp_path / split / "captions.jsonl",
            [{"file": f"{k}.jpg", "text": "a red star"} for k in range(count)],
        )
    ds = _open(tmp_path, options={"tokenizer": "shapes_words", "text_length": 6})
    assert [pathlib.Path(p).parent.name for p in ds.train.paths] == ["train"] * 3
    assert [pathlib.Path(p).name for p in ds.test.paths] == ["0.jpg", "1.jpg"]
    assert ds.test[1]["tokens"].tolist() == [20, 2, 9, 18, 21, 0] and ds.notes == ()
    with pytest.raises(UserError, match=r"test_split='test': no .*test/captions.jsonl; add it"):
        _open(tmp_path, test_split="test")
    (tmp_path / "val" / "captions.jsonl").unlink()
    with pytest.raises(UserError, match=r"train/captions.jsonl has no held-out folder beside it"):
        _open(tmp_path)


def test_coco_captions(tmp_path):
    images = [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}]
    images.append({"id": 11, "file_name": "c.jpg"})  # no captions: left out
    annotations = [
        {"id": 1, "image_id": 9, "caption": "a dog"},
        {"id": 2, "image_id": 7, "caption": "a cat"},
        {"id": 3, "image_id": 9, "caption": "a brown dog "},
    ]
    (tmp_path / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            _image(tmp_path / split / name, 50)
        data = {"images": images, "annotations": annotations}
        (tmp_path / "annotations" / f"captions_{split}.json").write_text(json.dumps(data))
    ds = _open(tmp_path)
    assert [pathlib.Path(p).name for p in ds.train.paths] == ["a.jpg", "b.jpg"]
    assert ds.train.texts == ("a cat", "a dog", "a brown dog")
    assert ds.train.image_of.tolist() == [0, 1, 1] and ds.train.captions_of(1) == [
        "a dog",
        "a brown dog",
    ]
    assert ds.train[2]["image_index"] == 1
    assert ds.notes[:2] == (
        "captions_train2017.json: 1 image(s) without captions left out",
        "captions_val2017.json: 1 image(s) without captions left out",
    )


def _error(tmp_path, lines, **kwargs) -> str:
    _image(tmp_path / "x.png", 1)
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as error:
        _open(tmp_path, **kwargs)
    return str(error.value)


def test_jsonl_errors_name_the_line(tmp_path):
    good = json.dumps({"file": "x.png", "text": "a thing"})
    path = tmp_path / "captions.jsonl"
    assert _error(tmp_path, [good, "", '{"file": "x.png", "text": }']) == (
        f"{path} line 3: not valid JSON (Expecting value at column 27); fix it or drop it"
    )
    assert _error(tmp_path, [good, json.dumps({"file": "x.png", "text": "  "})]) == (
        f'{path} line 2: an empty or missing "text" caption for x.png; fix it or drop it'
    )
    assert _error(tmp_path, [json.dumps({"text": "a thing"})]) == (
        f'{path} line 1: no "file" (the image\'s path, relative to the folder); fix it or drop it'
    )
    assert _error(tmp_path, ['["x.png", "a thing"]']) == (
        f'{path} line 1: a JSON list, not {{"file", "text"}}; fix it or drop it'
    )
    assert _error(tmp_path, ["", ""]) == (
        f'{path} holds no captions: add one {{"file": ..., "text": ...}} a line'
    )


def test_missing_and_unreadable_images(tmp_path):
    for k in range(3):
        _image(tmp_path / f"{k}.png", k)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    entries = [{"file": f"{k}.png", "text": f"image {k}"} for k in range(3)]
    entries += [{"file": "gone.png", "text": "lost"}, {"file": "broken.png", "text": "bad"}]
    _jsonl(tmp_path / "captions.jsonl", entries)
    ds = _open(tmp_path, test_fraction=0.4)
    assert ds.skipped == ("gone.png (missing)", "broken.png (not an image)")
    assert sorted(ds.train.texts + ds.test.texts) == ["image 0", "image 1", "image 2"]
    with pytest.raises(UserError) as error:
        _open(tmp_path, strict=True)
    assert str(error.value) == (
        f"2 unreadable image file(s) under {tmp_path}: gone.png (missing), broken.png (not an "
        "image); remove or replace them, or set data_strict=False to leave them out"
    )


def test_folder_and_coco_errors(tmp_path):
    with pytest.raises(UserError, match="dataset 'captions' needs data_dir=<root>"):
        open_dataset("captions")
    with pytest.raises(UserError, match=r"data_dir .*nowhere does not exist: point it at a folder"):
        _open(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"no captions.jsonl in .* write one line"):
        _open(tmp_path)
    with pytest.raises(UserError, match=r"unknown option\(s\) seed for 'captions'"):
        _open(tmp_path, options={"seed": 1})
    folder = tmp_path / "annotations"
    folder.mkdir()
    with pytest.raises(UserError, match=r"no .*captions_train\*.json \(found no .json files\)"):
        _open(tmp_path)
    coco = folder / "captions_train.json"
    coco.write_text('{"images": [], \n "annotations": [}')
    with pytest.raises(UserError) as error:
        _open(tmp_path)
    assert str(error.value).startswith(f"{coco} line 2: not valid JSON (")
    images = [{"id": 1, "file_name": "a.png"}]
    cases = [
        ([{"id": 5, "image_id": 2, "caption": "x"}], "annotation 5: image id 2 is not in 'images'"),
        (
            [{"image_id": 1, "caption": ""}],
            "annotation #0: an empty or missing 'caption' (image id 1)",
        ),
        ([{"id": 3, "image_id": 1}], "annotation 3: an empty or missing 'caption' (image id 1)"),
    ]
    for annotations, message in cases:
        coco.write_text(json.dumps({"images": images, "annotations": annotations}))
        with pytest.raises(UserError) as error:
            _open(tmp_path)
        assert str(error.value) == f"{coco} {message}; fix it or drop it"
    coco.write_text(json.dumps({"images": images}))
    with pytest.raises(UserError, match="no 'annotations' list; give a COCO captions file"):
        _open(tmp_path)


def test_tokenizer_from_texts_is_the_default():
    tokenizer = WordTokenizer.from_texts(["b a", "c"], length=5)
    assert tokenizer("a b c d").tolist() == [5, 2, 3, 4, 6]  # cut: SOT a b c EOT


def test_captioned_shapes_written_as_a_folder_read_back(tmp_path):
    """The captioned shapes saved as PNGs with every phrasing in captions.jsonl open as the
    same pixels, texts and tokens."""
    shapes = open_dataset("shapes_captions", options={"image_size": 32, "num_train": 6})
    for split, name in (("train", "train"), ("test", "val")):
        source = getattr(shapes, split)
        (tmp_path / name).mkdir()
        entries = []
        for i in range(6):
            Image.fromarray(source[i]["image"]).save(tmp_path / name / f"{i}.png")
            entries += [{"file": f"{i}.png", "text": t} for t in source.captions(i)]
        _jsonl(tmp_path / name / "captions.jsonl", entries)
    ds = _open(tmp_path, options={"tokenizer": "shapes_words", "text_length": 16})
    assert len(ds.train) == sum(len(shapes.train.captions(i)) for i in range(6))
    same_text = 0
    for k in range(len(ds.train)):
        record = ds.train[k]
        original = shapes.train[record["image_index"]]
        assert np.array_equal(np.asarray(record["image"]), original["image"])
        assert record["text"] in shapes.train.captions(record["image_index"])
        if record["text"] == original["text"]:
            assert np.array_equal(record["tokens"], original["tokens"])
            same_text += 1
    assert same_text == 6  # each image's own caption is one of its phrasings
