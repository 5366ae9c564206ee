"""The captioned shapes: records, determinism, captions that say what was drawn, held-out
colour-shape combinations, and batches through the input pipeline."""

import pickle
import re

import numpy as np
import pytest

from jaxvision.data import EvalTransform, TrainTransform, eval_batches, open_dataset, train_batches
from jaxvision.data import shapes_captions as sc
from jaxvision.errors import UserError

SIZE = 64
OPTIONS = {"image_size": SIZE, "num_train": 1600, "num_test": 300}


@pytest.fixture(scope="module")
def dataset():
    return open_dataset("shapes_captions", options=OPTIONS)


def test_records_and_determinism(dataset):
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (1600, 300, 30)
    assert dataset.class_names[:3] == ("red circle", "red square", "red triangle")
    assert dataset.class_names[-1] == "orange cross" and dataset.image_size == SIZE
    record = dataset.train[3]
    assert sorted(record) == [
        "held_out",
        "image",
        "label",
        "num_objects",
        "object_boxes",
        "object_classes",
        "object_colours",
        "object_shapes",
        "object_sizes",
        "text",
        "tokens",
    ]
    assert record["image"].dtype == np.uint8 and record["image"].shape == (SIZE, SIZE, 3)
    assert record["tokens"].dtype == np.int32 and record["tokens"].shape == (16,)
    assert record["object_boxes"].dtype == np.float32 and record["object_boxes"].shape == (2, 4)
    for key in ("object_classes", "object_colours", "object_shapes", "object_sizes"):
        assert record[key].dtype == np.int32 and record[key].shape == (2,)
    assert isinstance(record["text"], str) and isinstance(record["label"], int)
    # One shape in even items, two in odd ones, known without drawing; padding rows are -1.
    np.testing.assert_array_equal(dataset.train.num_objects[:4], [1, 2, 1, 2])
    single = dataset.train[4]
    assert single["num_objects"] == 1 and single["object_classes"][1] == -1
    assert not single["object_boxes"][1].any()
    # The same item from another copy, another opening, in any order; seeds and splits differ.
    copy = pickle.loads(pickle.dumps(dataset.train))
    again = open_dataset("shapes_captions", options=OPTIONS).train
    for i in (7, 2, 7):
        for other in (copy[i], again[i]):
            assert np.array_equal(other["image"], dataset.train[i]["image"])
            assert other["text"] == dataset.train[i]["text"]
            assert np.array_equal(other["tokens"], dataset.train[i]["tokens"])
    reseeded = open_dataset("shapes_captions", options={**OPTIONS, "seed": 1})
    assert not np.array_equal(reseeded.train[7]["image"], dataset.train[7]["image"])
    assert not np.array_equal(dataset.test[7]["image"], dataset.train[7]["image"])
    # The tokens are the caption's, in CLIP's layout: SOT, words, EOT, zeros.
    tokenizer = sc.word_tokenizer(16)
    assert tokenizer.decode(record["tokens"]) == record["text"]
    words = record["text"].split()
    assert record["tokens"][0] == tokenizer.bos_id == 20
    assert record["tokens"][len(words) + 1] == tokenizer.eos_id == 21
    assert int(np.argmax(record["tokens"])) == len(words) + 1
    assert not record["tokens"][len(words) + 2 :].any()


_NAME = r"an? (?:(small|large) )?(\w+) (\w+)"


def _parse(text: str) -> list[tuple]:
    """(size or None, colour, shape) of each shape the caption names, left to right."""
    one = re.fullmatch(_NAME, text)
    if one:
        return [one.groups()]
    two = re.fullmatch(f"{_NAME} (left|right) of {_NAME}", text)
    assert two, text
    first, second = two.groups()[:3], two.groups()[4:]
    return [first, second] if two.group(4) == "left" else [second, first]


def test_captions_say_what_was_drawn():
    phrasings = set()
    for index in range(60):
        record, owner = sc.render(0, 1, index, SIZE, noise=False)
        named = _parse(record["text"])
        assert len(named) == record["num_objects"]
        phrasings.add((len(named), named[0][0] is not None, " right of " in record["text"]))
        for row, (size, colour, shape) in enumerate(named):
            mine = owner == row + 1
            # The named colour is the colour of the shape's pixels (within the jitter).
            painted = record["image"][mine].astype(float)
            want = sc.RGB[sc.COLOURS.index(colour)]
            assert np.abs(painted - want).max() <= 13, (index, colour, painted.mean(0))
            assert sc.SHAPES[record["object_shapes"][row]] == shape
            assert sc.COLOURS[record["object_colours"][row]] == colour
            assert record["object_classes"][row] == sc.CLASS_NAMES.index(f"{colour} {shape}")
            # The box bounds the shape's pixels; the size word matches its extent.
            x1, y1, x2, y2 = record["object_boxes"][row].astype(int)
            assert mine[y1:y2, x1:x2].sum() == mine.sum() > 20
            extent = max(x2 - x1, y2 - y1) / SIZE
            drawn_size = sc.SIZES[record["object_sizes"][row]]
            assert (extent < 0.31) == (drawn_size == "small"), (index, extent, drawn_size)
            if size is not None:
                assert size == drawn_size
            # The shape word matches the outline: how much of its box it fills.
            fill = mine[y1:y2, x1:x2].mean()
            low, high = {"circle": (0.6, 0.9), "triangle": (0.44, 0.56), "star": (0.3, 0.47)}.get(
                shape, (0.4, 1.0)
            )
            assert low < fill < high, (index, shape, fill)
        assert record["label"] == record["object_classes"][0]
        background = record["image"][owner == 0].astype(float)
        assert background.std(0).max() < 1e-6  # plain, without noise
        if len(named) == 2:  # "left of" is true: the first shape's pixels end before the second's
            assert record["object_boxes"][0, 2] < record["object_boxes"][1, 0]
            assert sc.foil(sc.objects_of(record)) not in sc.captions(sc.objects_of(record))
        assert record["text"] in sc.captions(sc.objects_of(record))
    assert len(phrasings) == 6  # every phrasing occurs
    assert sc.CLASS_PROMPTS[:2] == ("a red circle", "a red square")
    assert sc.CLASS_PROMPTS[-1] == "an orange cross" and len(sc.CLASS_PROMPTS) == 30
    for k in range(30):  # the one-shape items of the test split cycle through the classes
        record = sc.render(0, 1, 2 * k, SIZE)[0]
        assert sc.caption(sc.objects_of(record), 0) == sc.CLASS_PROMPTS[record["label"]]
        assert record["label"] == k


def test_held_out_combinations_only_in_test(dataset):
    held = {f"{c} {s}" for c, s in sc.HELD_OUT}
    assert len(held) == 5 and {c for c, _ in sc.HELD_OUT} < set(sc.COLOURS)
    assert [sc.CLASS_NAMES[k] for k in sc.HELD_OUT_LABELS] == sorted(held, key=sc.CLASS_NAMES.index)
    seen_in_train = set()
    for i in range(len(dataset.train)):
        record = dataset.train[i]
        classes = record["object_classes"][: record["num_objects"]]
        assert not record["held_out"] and not set(classes.tolist()) & set(sc.HELD_OUT_LABELS)
        assert not any(h in record["text"] for h in held), record["text"]
        seen_in_train |= set(classes.tolist())
    assert seen_in_train == set(sc.SEEN_LABELS)  # the 25 others all occur
    found = set()
    for i in range(len(dataset.test)):
        record = dataset.test[i]
        classes = set(record["object_classes"][: record["num_objects"]].tolist())
        assert record["held_out"] == bool(classes & set(sc.HELD_OUT_LABELS))
        found |= {h for h in held if h in record["text"]}
    assert found == held
    # One-shape items cycle through the split's classes: balanced, known without drawing.
    assert [dataset.test[2 * k]["label"] for k in range(30)] == list(range(30))
    assert [dataset.train[2 * k]["label"] for k in range(25)] == list(sc.SEEN_LABELS)
    only_one = open_dataset("shapes_captions", options={**OPTIONS, "max_objects": 1})
    assert [only_one.test[k]["num_objects"] for k in range(4)] == [1, 1, 1, 1]
    assert [only_one.test[k]["label"] for k in range(4)] == [0, 1, 2, 3]


def test_batches_through_the_pipeline(dataset):
    transform = TrainTransform(image_size=SIZE, crop="none", flip=False)
    batch = next(train_batches(dataset.train, transform, global_batch_size=8, seed=0))
    assert batch["image"].shape == (8, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
    assert batch["tokens"].shape == (8, 16) and batch["tokens"].dtype == np.int32
    assert batch["text"].shape == (8,) and batch["text"].dtype.kind == "U"
    assert batch["label"].dtype == np.int32 and batch["held_out"].dtype == bool
    assert batch["object_boxes"].shape == (8, 2, 4)
    tokenizer = sc.word_tokenizer(16)
    np.testing.assert_array_equal(batch["tokens"], tokenizer(list(batch["text"])))
    small = open_dataset("shapes_captions", options={**OPTIONS, "num_test": 5})
    batches = list(eval_batches(small.test, EvalTransform(SIZE, 1.0), global_batch_size=4))
    assert [b["mask"].tolist() for b in batches] == [[True] * 4, [True, False, False, False]]
    assert batches[1]["text"][0] == small.test[4]["text"] and batches[1]["text"][1] == ""
    assert not batches[1]["tokens"][1].any()


def test_options_and_errors():
    custom = open_dataset(
        "shapes_captions", options={"image_size": 32, "num_train": 4, "text_length": 6}
    )
    record = custom.train[1]
    assert record["image"].shape == (32, 32, 3) and record["tokens"].shape == (6,)
    assert record["tokens"][-1] == 21  # a long caption is cut and still ends with EOT
    with pytest.raises(UserError, match=r"unknown option\(s\) colours for 'shapes_captions'"):
        open_dataset("shapes_captions", options={"colours": 3})
    with pytest.raises(UserError, match="max_objects must be 1 or 2, got 3"):
        open_dataset("shapes_captions", options={"max_objects": 3})
    with pytest.raises(UserError, match="image_size must be at least 32, got 16"):
        open_dataset("shapes_captions", options={"image_size": 16})
    with pytest.raises(UserError, match="unknown tokenizer 'bpe'"):
        open_dataset("shapes_captions", options={"tokenizer": "bpe"})
