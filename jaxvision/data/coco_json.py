"""Your own COCO-format detection data ("coco_json"): `ROOT/annotations/instances_<split>*.json`
and the images it names, the layout COCO ships and labelling tools (CVAT, Label Studio, Roboflow)
export. Items are the detection records of jaxvision.data.coco.

Rules, all applied when the dataset opens, so that nothing fails minutes into training:
- images: an image's `file_name` is looked up as ROOT/<split folder>/<file_name>, then
  ROOT/images/<file_name>, then ROOT/<file_name>, first existing wins (an absolute file_name is
  used as is); the split folder is the json's name without "instances_", e.g. train2017/ for
  instances_train2017.json. Every image's header is read (threads, as the folder dataset does):
  a file that is missing or unreadable, or whose size is not the json's width x height (its boxes
  would not fit it: we neither guess a rescale nor apply EXIF rotations), is left out with its
  annotations and listed in `Dataset.skipped` (a missing one under the first place looked in);
  with `strict` any of these is an error instead. An image without width/height takes its
  file's.
- labels: a category's label is its id when every id is >= 1 (COCO's convention: COCO's 80
  categories keep ids 1..90 and the 91-class torchvision models fit), num_classes = largest
  id + 1, unused ids named "N/A"; when some id is 0, label = id + 1; with the option
  labels="contiguous" the categories are numbered 1..K in id order instead. Train and test jsons
  may list different categories; one id with two names is an error.
- annotations: `bbox` is COCO's [x, y, width, height]; boxes reaching outside their image are
  clipped to it (counted in `Dataset.notes`) and boxes of zero area after clipping dropped
  (counted). `area` defaults to the clipped box's area, `iscrowd` to 0. An annotation naming an
  unknown category or image, or whose bbox is not 4 finite numbers with width and height >= 0,
  is an error naming its id and file; so is malformed JSON, in one line.
- splits: train_split "train" and test_split "val" match instances_train*.json and
  instances_val*.json (one each; name e.g. "train2017" to pick among several). A tree with no
  validation json (a labelling tool's single export) holds out test_fraction of its images
  (seeded by split_seed) unless test_split names one.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxvision.data import files
from jaxvision.data.coco import contiguous_labels
from jaxvision.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    DatasetRequest,
    check_fraction,
)
from jaxvision.errors import UserError, listing

IMAGE_DIRS = ("images", "")  # looked in after ROOT/<split folder>, in this order
HEADER_THREADS = 16


class CocoJsonSource(Sequence):
    """The images of one COCO json, decoded with PIL on access, with their annotations.

    Attributes: `paths` (one per item), `image_ids` int64 [n], `sizes` int [n, 2] (h, w), and
    the annotations of item i in rows `offsets[i]:offsets[i + 1]` of `boxes` float32 [T, 4],
    `classes` int32 [T], `iscrowd` int32 [T], `area` float32 [T]. `annotation_file`: the json.
    """

    def __init__(
        self, annotation_file, paths, image_ids, sizes, offsets, boxes, classes, crowd, area
    ):
        self.annotation_file = str(annotation_file)
        self.paths = tuple(paths)
        self.image_ids = np.asarray(image_ids, np.int64)
        self.sizes = np.asarray(sizes, np.int64).reshape(-1, 2)
        self.offsets = np.asarray(offsets, np.int64)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(classes, np.int32)
        self.iscrowd = np.asarray(crowd, np.int32)
        self.area = np.asarray(area, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = files.load_image(self.paths[index], 3)
        if image.shape[:2] != tuple(self.sizes[index]):
            raise UserError(
                f"image {self.paths[index]} is {image.shape[1]}x{image.shape[0]} now but was "
                f"{self.sizes[index][1]}x{self.sizes[index][0]} when the dataset opened: was it "
                "replaced? Open the dataset again"
            )
        rows = slice(int(self.offsets[index]), int(self.offsets[index + 1]))
        return {
            "image": image,
            "boxes": self.boxes[rows].copy(),
            "classes": self.classes[rows].copy(),
            "iscrowd": self.iscrowd[rows].copy(),
            "area": self.area[rows].copy(),
            "image_id": int(self.image_ids[index]),
        }

    def subset(self, items: Sequence[int]) -> CocoJsonSource:
        """The items at `items` (sorted), with their annotations."""
        items = np.asarray(items, np.int64)
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in items]
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        counts = self.offsets[items + 1] - self.offsets[items]
        return CocoJsonSource(
            self.annotation_file,
            [self.paths[i] for i in items],
            self.image_ids[items],
            self.sizes[items],
            np.concatenate([[0], np.cumsum(counts)]),
            self.boxes[rows],
            self.classes[rows],
            self.iscrowd[rows],
            self.area[rows],
        )


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("coco_json", data_dir=..., ...)."""
    return open_coco_json(
        request.data_dir,
        request.train_split,
        request.test_split,
        request.test_fraction,
        request.split_seed,
        strict=request.strict,
        contiguous=contiguous_labels(request),
    )


def open_coco_json(
    data_dir: str | None,
    train_split: str,
    test_split: str | None,
    test_fraction: float,
    split_seed: int,
    *,
    strict: bool = False,
    contiguous: bool = False,
) -> Dataset:
    """The COCO-format tree at `data_dir` (see the module docstring and `open_dataset`)."""
    if data_dir is None:
        raise UserError(
            "dataset 'coco_json' needs data_dir=<root> with <root>/annotations/instances_*.json"
        )
    root = pathlib.Path(data_dir).expanduser()
    if not (root / "annotations").is_dir():
        what = "does not exist" if not root.exists() else "has no annotations/ folder"
        raise UserError(
            f"data_dir {root} {what}: point it at a COCO-format root holding "
            "annotations/instances_<split>.json and the image folders"
        )
    train_file = find_annotations(root, train_split, "train_split", required=True)
    test_file = find_annotations(
        root, test_split or "val", "test_split", required=test_split is not None
    )
    if test_file is None:
        check_fraction(test_fraction)
    parsed = [_read_split(train_file)] + ([_read_split(test_file)] if test_file else [])
    label_of, class_names, category_note = _labels(parsed, contiguous)
    checked, skipped = _check_images(root, parsed, strict)
    notes, splits = [], []
    for split, (sizes, problems) in zip(parsed, checked, strict=True):
        source, note = _build_source(split, label_of, sizes, problems)
        notes.append(note)
        splits.append(source)
    if test_file is None:
        if len(splits[0]) < 2:
            raise UserError(
                f"{train_file} has {len(splits[0])} usable image(s): holding some out for "
                "testing needs two or more, or an instances_val*.json"
            )
        order = np.random.default_rng(split_seed).permutation(len(splits[0]))
        num_test = min(max(1, round(len(order) * test_fraction)), len(order) - 1)
        whole = splits[0]
        splits = [whole.subset(np.sort(order[num_test:])), whole.subset(np.sort(order[:num_test]))]
        notes.append(
            f"no instances_val*.json in {root / 'annotations'}: held out {num_test} of "
            f"{len(order)} images of {train_file.name} for testing (test_fraction "
            f"{test_fraction}, split_seed {split_seed})"
        )
    if category_note:
        notes.append(category_note)
    counts = [np.diff(s.offsets) for s in splits]
    return Dataset(
        train=splits[0],
        test=splits[1],
        num_classes=len(class_names),
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=None,
        skipped=tuple(skipped),
        notes=tuple(notes),
        max_boxes=int(max(c.max(initial=0) for c in counts)),
    )


def find_annotations(
    root: pathlib.Path,
    split: str,
    option: str,
    required: bool,
    prefix: str = "instances",
    example: str = "default",
):
    """ROOT/annotations/<prefix>_<split>*.json (one: `<prefix>_<split>.json` itself, or the one
    file its name starts), None if absent and not `required`. `option` names the config field
    that chose `split` in the errors; `example` is a split their hint names."""
    folder = root / "annotations"
    exact = folder / f"{prefix}_{split}.json"
    if exact.is_file():
        return exact
    found = sorted(folder.glob(f"{prefix}_{split}*.json"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        choices = ", ".join(repr(p.stem.removeprefix(f"{prefix}_")) for p in found)
        raise UserError(
            f"{len(found)} annotation files match {option}={split!r} in {folder} ({names}): "
            f"set {option} to one of {choices}"
        )
    if not required:
        return None
    there = listing(sorted(p.name for p in folder.glob("*.json"))) or "no .json files"
    raise UserError(
        f"no {folder}/{prefix}_{split}*.json (found {there}): name the split after its file "
        f"in {option}, e.g. {option}='{example}' for {prefix}_{example}.json"
    )


def _fail(path: pathlib.Path, what: str) -> UserError:
    return UserError(f"{path}: {what}; fix or re-export the file")


def _read_split(path: pathlib.Path) -> dict:
    """The json's images, categories and annotations, checked for shape (not yet for files)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}): check the file") from None
    if not isinstance(data, dict):
        raise _fail(path, f"the top level is a JSON {type(data).__name__}, not a COCO object")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"no {key!r} list")
    annotations = data.get("annotations", [])  # test-image lists (image_info_*) have none
    if not isinstance(annotations, list):
        raise _fail(path, "'annotations' is not a list")
    images = data["images"]
    if not images:
        raise _fail(path, "no images")
    index = {}
    for k, image in enumerate(images):
        if not isinstance(image, dict) or not _is_int(image.get("id")):
            raise _fail(path, f"images[{k}] has no integer 'id'")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise _fail(path, f"image {image['id']} has no 'file_name'")
        for key in ("width", "height"):
            if key in image and not (_is_int(image[key]) and image[key] > 0):
                raise _fail(path, f"image {image['id']} has {key} {image[key]!r}")
        if image["id"] in index:
            raise _fail(path, f"image id {image['id']} appears twice")
        index[image["id"]] = k
    categories = {}
    for k, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or not _is_int(category.get("id")) or category["id"] < 0:
            raise _fail(path, f"categories[{k}] has no integer 'id' >= 0")
        if category["id"] in categories:
            raise _fail(path, f"category id {category['id']} appears twice")
        categories[category["id"]] = str(category.get("name", category["id"]))
    return {
        "path": path,
        "images": images,
        "index": index,
        "categories": categories,
        "annotations": _read_annotations(path, annotations, index, categories),
    }


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_annotations(path, annotations, index, categories) -> dict:
    """Arrays over the annotations: image row, category id, bbox (x, y, w, h), crowd, area.

    Vectorised (COCO train's 860k annotations check in under a second); when a check fails,
    the annotations are walked one by one to name the first bad one."""
    try:
        arrays = _annotation_arrays(annotations, index, categories)
    except (KeyError, TypeError, ValueError, AttributeError):
        arrays = None
    if arrays is None:
        for k, a in enumerate(annotations):
            _check_annotation(path, k, a, index, categories)
        raise _fail(path, "an annotation is malformed")  # not reached: the walk names it
    return arrays


def _annotation_arrays(annotations, index, categories) -> dict | None:
    """The arrays, or None if some annotation breaks a rule (a KeyError etc. also means so)."""
    n = len(annotations)
    rows = np.array([index[a["image_id"]] for a in annotations], np.int64).reshape(n)
    category_ids = np.array([a["category_id"] for a in annotations])
    bbox = np.array([a["bbox"] for a in annotations])
    crowd = np.array([a.get("iscrowd", 0) for a in annotations])
    area = np.array([a.get("area", np.nan) for a in annotations])
    if n and (
        category_ids.dtype.kind not in "iu"
        or not np.isin(category_ids, list(categories)).all()
        or bbox.dtype.kind not in "iuf"
        or bbox.shape != (n, 4)
        or not np.isfinite(bbox).all()
        or (bbox[:, 2:] < 0).any()
        or crowd.dtype.kind not in "biu"
        or not np.isin(crowd, (0, 1)).all()
        or area.dtype.kind not in "iuf"
        or (area < 0).any()
    ):
        return None
    return {
        "rows": rows,
        "category_ids": category_ids.astype(np.int64).reshape(n),
        "bbox": bbox.astype(np.float64).reshape(n, 4),
        "crowd": crowd.astype(np.int64).reshape(n),
        "area": area.astype(np.float64).reshape(n),
    }


def _check_annotation(path, k: int, a, index, categories) -> None:
    """Raises the UserError that names what is wrong with annotation `a` (number `k`)."""
    name = f"annotation {a.get('id', f'#{k}')}" if isinstance(a, dict) else f"annotations[{k}]"
    if not isinstance(a, dict):
        raise _fail(path, f"{name} is not an object")
    if not _is_int(a.get("image_id")) or a["image_id"] not in index:
        raise _fail(path, f"{name} refers to image id {a.get('image_id')!r}, not in 'images'")
    if not _is_int(a.get("category_id")) or a["category_id"] not in categories:
        known = listing(sorted(categories), limit=10)
        raise _fail(
            path, f"{name} has unknown category_id {a.get('category_id')!r} (known: {known})"
        )
    box = a.get("bbox")
    if (
        not isinstance(box, list | tuple)
        or len(box) != 4
        or not all(_is_number(v) and math.isfinite(v) for v in box)
        or box[2] < 0
        or box[3] < 0
    ):
        raise _fail(path, f"{name} has bbox {box!r}, not [x, y, width >= 0, height >= 0]")
    if a.get("iscrowd", 0) not in (0, 1):  # True and False compare equal to 1 and 0
        raise _fail(path, f"{name} has iscrowd {a.get('iscrowd')!r}, not 0 or 1")
    if "area" in a and not (_is_number(a["area"]) and a["area"] >= 0):
        raise _fail(path, f"{name} has area {a['area']!r}")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _labels(parsed: list[dict], contiguous: bool) -> tuple[dict[int, int], tuple[str, ...], str]:
    """{category id: label}, the class names by label, and a note when ids leave gaps."""
    names: dict[int, str] = {}
    for split in parsed:
        for cid, name in split["categories"].items():
            if names.setdefault(cid, name) != name:
                raise UserError(
                    f"category id {cid} is {names[cid]!r} in {parsed[0]['path']} but {name!r} "
                    f"in {split['path']}: give each id one name"
                )
    if not names:
        raise _fail(parsed[0]["path"], "no categories")
    shift = 1 if min(names) == 0 else 0
    label_of = {cid: cid + shift for cid in names}
    if contiguous:
        label_of = {cid: k + 1 for k, cid in enumerate(sorted(names))}
    class_names = ["N/A"] * (max(label_of.values()) + 1)
    class_names[0] = "__background__"
    for cid, name in names.items():
        class_names[label_of[cid]] = name
    note = ""
    if contiguous:
        pass
    elif shift:
        note = "category ids start at 0: labels are category id + 1 (0 is the background)"
    elif len(class_names) - 1 > len(names):
        note = (
            f"category ids run to {max(names)} for {len(names)} categories: num_classes is "
            f"{len(class_names)} and the unused ids are named N/A"
        )
    return label_of, tuple(class_names), note


def _candidates(root: pathlib.Path, split_dir: str, file_name: str) -> list[str]:
    if os.path.isabs(file_name):
        return [file_name]
    dirs = [root / split_dir] + [root / d if d else root for d in IMAGE_DIRS]
    return [str(d / file_name) for d in dirs]


def _probe(candidates: list[str]) -> tuple[str, tuple[int, int] | str]:
    """(path, (w, h)) of the first existing candidate, or (path, problem)."""
    path = next((p for p in candidates if os.path.lexists(p)), None)
    if path is None:
        return candidates[0], "missing"  # the path shown is the first place looked in
    problem = files.image_problem(path)
    if problem is not None:
        return path, problem
    with Image.open(path) as image:  # the header only: no decoding
        return path, image.size


def _check_images(root: pathlib.Path, parsed: list[dict], strict: bool):
    """Per split ([(path, h, w)] per image, {image row: problem}), and every problem as
    "path (why)" with the path relative to the root; raises with `strict` if there are any."""
    jobs = []
    for split in parsed:
        split_dir = split["path"].stem.removeprefix("instances_")
        jobs += [_candidates(root, split_dir, image["file_name"]) for image in split["images"]]
    with concurrent.futures.ThreadPoolExecutor(HEADER_THREADS) as pool:
        results = iter(list(pool.map(_probe, jobs, chunksize=64)))
    checked, listed = [], []
    for split in parsed:
        sizes, problems = [], {}
        for row, image in enumerate(split["images"]):
            path, found = next(results)
            if isinstance(found, str):
                problems[row] = found
                sizes.append((path, 0, 0))
            else:
                width, height = found
                want = (image.get("width", width), image.get("height", height))
                if want != (width, height):
                    problems[row] = (
                        f"image id {image['id']} is {width}x{height}, but the json says "
                        f"{want[0]}x{want[1]}"
                    )
                sizes.append((path, height, width))
            if row in problems:
                shown = (
                    os.path.relpath(path, root) if not os.path.isabs(image["file_name"]) else path
                )
                listed.append(f"{shown} ({problems[row]})")
        checked.append((sizes, problems))
    if strict and listed:
        raise UserError(
            f"{len(listed)} image(s) of {root} cannot be used: {listing(listed)}; fix them or "
            "their json entries, or set data_strict=False to leave them out"
        )
    return checked, tuple(listed)


def _build_source(split: dict, label_of: dict, sizes: list, problems: dict):
    """The split's CocoJsonSource (usable images only, boxes clipped) and its note."""
    ann = split["annotations"]
    keep_image = np.array([row not in problems for row in range(len(sizes))], bool)
    heights = np.array([h for _, h, _ in sizes], np.float64)
    widths = np.array([w for _, _, w in sizes], np.float64)
    rows = ann["rows"]
    kept = keep_image[rows]
    x, y, w, h = ann["bbox"].T
    limit_w, limit_h = widths[rows], heights[rows]
    raw = np.stack([x, y, x + w, y + h], 1)
    boxes = np.stack(
        [np.clip(raw[:, 0], 0, limit_w), np.clip(raw[:, 1], 0, limit_h)]
        + [np.clip(raw[:, 2], 0, limit_w), np.clip(raw[:, 3], 0, limit_h)],
        1,
    )
    positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = kept & positive & (boxes != raw).any(1)
    dropped = kept & ~positive
    take = np.flatnonzero(kept & positive)
    take = take[np.argsort(rows[take], kind="stable")]  # grouped by image, file order within
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area = np.where(np.isnan(ann["area"]), box_area, ann["area"])
    images = np.flatnonzero(keep_image)
    counts = np.bincount(rows[take], minlength=len(sizes))[images]
    lookup = np.zeros(max(label_of) + 1, np.int32)  # category id -> label
    lookup[list(label_of)] = list(label_of.values())
    source = CocoJsonSource(
        split["path"],
        [sizes[i][0] for i in images],
        [split["images"][i]["id"] for i in images],
        [(sizes[i][1], sizes[i][2]) for i in images],
        np.concatenate([[0], np.cumsum(counts)]),
        boxes[take],
        lookup[ann["category_ids"][take]],
        ann["crowd"][take],
        area[take],
    )
    if not len(source):
        raise UserError(
            f"no usable images left in {split['path']} ({listing(problems.values())}): "
            "check the image folders"
        )
    facts = [
        _plural(len(source), "image"),
        f"{_plural(len(take), 'box')} ({int(ann['crowd'][take].sum())} crowd)",
        f"{_plural(int((counts == 0).sum()), 'image')} without boxes",
    ]
    if problems:
        facts.append(f"{_plural(len(problems), 'image')} left out (see skipped)")
    if clipped.any():
        facts.append(f"{_plural(int(clipped.sum()), 'box')} clipped to their image")
    if dropped.any():
        facts.append(f"{_plural(int(dropped.sum()), 'box')} of zero area dropped")
    return source, f"{split['path'].name}: " + ", ".join(facts)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 'es' if noun.endswith('x') else 's'}"
