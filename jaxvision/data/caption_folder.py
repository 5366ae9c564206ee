"""Your own captioned images ("captions"): a folder with `captions.jsonl`, or COCO captions JSON.

Layouts of `data_dir` (ROOT), first match wins:
- `ROOT/<train_split>/captions.jsonl` and `ROOT/<test>/captions.jsonl` (`test_split`, default
  val, validation or test): the two splits, each naming files relative to its own folder;
- `ROOT/captions.jsonl`: one split, of which `test_fraction` of the images (not of the
  captions: an image's captions stay together) is held out, chosen by `split_seed`;
- `ROOT/annotations/captions_<split>*.json`: COCO captions (`images` with `id` and
  `file_name`, `annotations` with `image_id` and `caption`), train_split "train" and test_split
  "val" matching captions_train2017.json and captions_val2017.json; an image's file is looked
  up as ROOT/<split folder>/<file_name> (train2017/ for captions_train2017.json), then
  ROOT/images/<file_name>, then ROOT/<file_name>. Images without captions are left out (noted).

`captions.jsonl` holds one JSON object a line, `{"file": "dogs/1.jpg", "text": "a brown dog"}`;
an image may have several lines (several captions); blank lines are skipped. Everything is
checked when the dataset opens: malformed JSON, a line or annotation without a file, image or
caption, and empty captions are errors naming the line or annotation; image files that are
missing or unreadable (`files.check_image_files`) are left out with their captions and listed in
`Dataset.skipped`, or stop the run with `strict`.

Items are (image, caption) pairs in file order: `{"image": uint8 [H, W, 3] (a JPEG as
`jpeg.JpegImage`, decoded by the crop), "text": str, "tokens": int32 [text_length],
"image_index": int}`, `image_index` the image's row in the split's `paths` (an evaluator groups
an image's captions by it). `tokens` come from the tokenizer named by the option `tokenizer`
(with `tokenizer_path`); without one, from a word tokenizer whose vocabulary is every word of the
training captions, sorted.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxvision.data import files, jpeg
from jaxvision.data.coco_json import find_annotations
from jaxvision.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    DatasetRequest,
    check_fraction,
)
from jaxvision.data.folder import FOLDER_TEST_SPLITS
from jaxvision.data.tokenizers import WordTokenizer, make_tokenizer
from jaxvision.errors import UserError, listing

CAPTIONS_FILE = "captions.jsonl"
IMAGE_DIRS = ("images", "")  # COCO: looked in after ROOT/<split folder>, in this order
OPTIONS = ("tokenizer", "tokenizer_path", "text_length")


class CaptionSource(Sequence):
    """(image, caption) pairs: `paths` one per image, `texts` and `image_of` (int64, the
    image's row in `paths`) one per pair; `tokenizer` makes each pair's `tokens`."""

    def __init__(self, paths: Sequence[str], texts: Sequence[str], image_of, tokenizer):
        self.paths = tuple(str(p) for p in paths)
        self.texts = tuple(texts)
        self.image_of = np.asarray(image_of, np.int64).reshape(len(self.texts))
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        row = int(self.image_of[index])
        text = self.texts[index]
        return {
            "image": jpeg.open_image(self.paths[row], 3),
            "text": text,
            "tokens": self.tokenizer(text),
            "image_index": row,
        }

    def captions_of(self, row: int) -> list[str]:
        """Every caption of image `row` (`image_of` groups them all at once)."""
        return [self.texts[k] for k in np.flatnonzero(self.image_of == row)]


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("captions", data_dir=..., options=...)."""
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"unknown option(s) {', '.join(unknown)} for 'captions': use {', '.join(OPTIONS)}"
        )
    return open_captions(
        request.data_dir,
        request.train_split,
        request.test_split,
        request.test_fraction,
        request.split_seed,
        strict=request.strict,
        **request.options,
    )


def open_captions(
    data_dir: str | None,
    train_split: str = "train",
    test_split: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    *,
    strict: bool = False,
    tokenizer: str | None = None,
    tokenizer_path: str | None = None,
    text_length: int = 32,
) -> Dataset:
    """The captioned images under `data_dir` (see the module docstring)."""
    if data_dir is None:
        raise UserError(
            f"dataset 'captions' needs data_dir=<root> with <root>/{CAPTIONS_FILE} or "
            "<root>/annotations/captions_<split>.json"
        )
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise UserError(
            f"data_dir {root} {what}: point it at a folder holding {CAPTIONS_FILE} and the images"
        )
    splits, notes = _read_layout(root, train_split, test_split)
    skipped = _drop_unreadable(root, splits, strict)
    if len(splits) == 1:
        check_fraction(test_fraction)
        splits, note = _hold_out(splits[0], test_fraction, split_seed)
        notes.append(note)
    train, test = splits
    if tokenizer is None:
        tokens = WordTokenizer.from_texts(train["texts"], int(text_length))
        notes.append(f"tokens: a word vocabulary of {len(tokens.words)} words from the captions")
    else:
        tokens = make_tokenizer(tokenizer, length=int(text_length), path=tokenizer_path)
    return Dataset(
        train=CaptionSource(train["paths"], train["texts"], train["image_of"], tokens),
        test=CaptionSource(test["paths"], test["texts"], test["image_of"], tokens),
        num_classes=0,
        class_names=(),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=None,
        skipped=skipped,
        notes=tuple(notes),
    )


def _read_layout(root: pathlib.Path, train_split: str, test_split: str | None):
    """([split, ...] as {"name", "paths", "texts", "image_of"}, notes) for the first layout of
    the module docstring that `root` has."""
    tests = (test_split,) if test_split is not None else FOLDER_TEST_SPLITS
    train_file = root / train_split / CAPTIONS_FILE
    test_files = [root / name / CAPTIONS_FILE for name in tests]
    test_files = [f for f in test_files if f.is_file()]
    if train_file.is_file() and test_files:
        return [read_jsonl(train_file), read_jsonl(test_files[0])], []
    if test_split is not None and train_file.is_file():
        raise UserError(
            f"test_split={test_split!r}: no {root / test_split / CAPTIONS_FILE}; add it, or "
            f"drop test_split to hold out test_fraction of {train_file}'s images"
        )
    if (root / CAPTIONS_FILE).is_file():
        return [read_jsonl(root / CAPTIONS_FILE)], []
    if train_file.is_file():
        raise UserError(
            f"{train_file} has no held-out folder beside it ({', '.join(tests)}, with its own "
            f"{CAPTIONS_FILE}): add one, or move it to {root / CAPTIONS_FILE} to hold out "
            "test_fraction of its images"
        )
    if (root / "annotations").is_dir():
        find = functools.partial(find_annotations, prefix="captions", example="train2017")
        train = find(root, train_split, "train_split", required=True)
        test = find(root, test_split or "val", "test_split", required=test_split is not None)
        splits = [read_coco_captions(root, train)] + (
            [read_coco_captions(root, test)] if test else []
        )
        notes = [s.pop("note") for s in splits if s.get("note")]
        return splits, notes
    raise UserError(
        f"no {CAPTIONS_FILE} in {root} (nor {train_file}, nor annotations/captions_*.json): "
        f'write one line {{"file": ..., "text": ...}} per caption into {root / CAPTIONS_FILE}'
    )


def _fail(path: pathlib.Path, where: str, what: str) -> UserError:
    return UserError(f"{path} {where}: {what}; fix it or drop it")


def read_jsonl(path: pathlib.Path) -> dict:
    """A `captions.jsonl`'s images (paths beside it, in first-seen order) and captions."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}): check the file") from None
    rows: dict[str, int] = {}
    texts, image_of = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, where, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(entry, dict):
            raise _fail(path, where, f'a JSON {type(entry).__name__}, not {{"file", "text"}}')
        file = entry.get("file")
        if not isinstance(file, str) or not file.strip():
            raise _fail(path, where, 'no "file" (the image\'s path, relative to the folder)')
        text = entry.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _fail(path, where, f'an empty or missing "text" caption for {file}')
        image = str(path.parent / file) if not os.path.isabs(file) else file
        texts.append(text.strip())
        image_of.append(rows.setdefault(image, len(rows)))
    if not texts:
        raise UserError(f'{path} holds no captions: add one {{"file": ..., "text": ...}} a line')
    return {"name": str(path), "paths": list(rows), "texts": texts, "image_of": image_of}


def read_coco_captions(root: pathlib.Path, path: pathlib.Path) -> dict:
    """A COCO captions json's captioned images (file order) and captions (annotation order)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}"
        raise _fail(path, where, f"not valid JSON ({e.msg} at column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}): check the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level is a JSON {type(data).__name__}, not COCO's object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise UserError(f"{path}: no {key!r} list; give a COCO captions file")
    files_of: dict[int, str] = {}
    for k, image in enumerate(data["images"]):
        ok = isinstance(image, dict) and isinstance(image.get("id"), int)
        if not ok or not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise _fail(path, f"images[{k}]", "no integer 'id' or no 'file_name'")
        if image["id"] in files_of:
            raise _fail(path, f"images[{k}]", f"image id {image['id']} appears twice")
        files_of[image["id"]] = image["file_name"]
    by_image: dict[int, list[str]] = {}
    for k, a in enumerate(data["annotations"]):
        name = f"annotation {a.get('id', f'#{k}')}" if isinstance(a, dict) else f"annotations[{k}]"
        if not isinstance(a, dict) or a.get("image_id") not in files_of:
            image_id = a.get("image_id") if isinstance(a, dict) else None
            raise _fail(path, name, f"image id {image_id!r} is not in 'images'")
        text = a.get("caption")
        if not isinstance(text, str) or not text.strip():
            raise _fail(path, name, f"an empty or missing 'caption' (image id {a['image_id']})")
        by_image.setdefault(a["image_id"], []).append(text.strip())
    split_dir = path.stem.removeprefix("captions_")
    paths, texts, image_of = [], [], []
    for image_id, file_name in files_of.items():
        if image_id not in by_image:
            continue
        paths.append(_locate(root, split_dir, file_name))
        texts += by_image[image_id]
        image_of += [len(paths) - 1] * len(by_image[image_id])
    if not texts:
        raise UserError(f"{path} has no captions: give a COCO captions file")
    bare = len(files_of) - len(paths)
    note = f"{path.name}: {bare} image(s) without captions left out" if bare else ""
    return {"name": str(path), "paths": paths, "texts": texts, "image_of": image_of, "note": note}


def _locate(root: pathlib.Path, split_dir: str, file_name: str) -> str:
    """The first existing of ROOT/<split_dir>/<file>, ROOT/images/<file>, ROOT/<file> (the
    first of them when none exists: reported missing there)."""
    if os.path.isabs(file_name):
        return file_name
    places = [root / split_dir / file_name] + [root / d / file_name for d in IMAGE_DIRS]
    return str(next((p for p in places if os.path.lexists(p)), places[0]))


def _drop_unreadable(root: pathlib.Path, splits: list[dict], strict: bool) -> tuple[str, ...]:
    """Leaves out (in place) the images that cannot be read, with their captions; returns them
    as "path (why)", or raises with `strict` or when a split is left with none."""
    paths = [p for split in splits for p in split["paths"]]
    problems = files.check_image_files(paths)
    if not problems:
        return ()
    listed = tuple(f"{_shown(root, p)} ({why})" for p, why in problems.items())
    if strict:
        raise UserError(
            f"{len(listed)} unreadable image file(s) under {root}: {listing(listed)}; remove or "
            "replace them, or set data_strict=False to leave them out"
        )
    for split in splits:
        keep = [p not in problems for p in split["paths"]]
        if not any(keep):
            raise UserError(
                f"no readable images named in {split['name']} ({listing(listed)}): check the paths"
            )
        split.update(_subset(split, np.asarray(keep, bool)))
    return listed


def _shown(root: pathlib.Path, path: str) -> str:
    try:
        return str(pathlib.Path(path).relative_to(root))
    except ValueError:
        return path


def _subset(split: dict, keep: np.ndarray) -> dict:
    """The images of `split` where `keep` (bool [images]) is True, with their captions."""
    new_row = np.cumsum(keep) - 1
    pairs = zip(split["texts"], split["image_of"], strict=True)
    pairs = [(t, int(new_row[r])) for t, r in pairs if keep[r]]
    return {
        "name": split["name"],
        "paths": [p for p, k in zip(split["paths"], keep, strict=True) if k],
        "texts": [t for t, _ in pairs],
        "image_of": [r for _, r in pairs],
    }


def _hold_out(split: dict, test_fraction: float, split_seed: int) -> tuple[list[dict], str]:
    """(train, test) from one split: `test_fraction` of its images, with all their captions."""
    count = len(split["paths"])
    if count < 2:
        raise UserError(
            f"{split['name']} names {count} usable image: holding some out for testing needs two "
            "or more, or a train/ and val/ folder each with its own captions.jsonl"
        )
    order = np.random.default_rng(split_seed).permutation(count)
    num_test = min(max(1, round(count * test_fraction)), count - 1)
    held = np.zeros(count, bool)
    held[order[:num_test]] = True
    parts = [_subset(split, ~held), _subset(split, held)]
    note = (
        f"held out {num_test} of {count} images of {split['name']} with their captions for "
        f"testing (test_fraction {test_fraction}, split_seed {split_seed})"
    )
    return parts, note
