"""Your own images as a dataset: `ROOT/<class>/*.jpg|png`, or `ROOT/train/` + `ROOT/val/`.

Class indices follow the sorted folder names. A class is every image below its folder, in
sub-folders too, listed as torchvision's ImageFolder lists them (folders by path, files by name
within each), except that hidden folders (`.ipynb_checkpoints`) are skipped there as they are
among classes, and a folder linked twice (or into itself) is read once. Every file is checked
when the dataset opens (`files.check_image_files`: header and end, no decoding): unreadable
ones are left out and listed in `Dataset.skipped`, or stop the run with `strict`.
"""

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from jaxvision.data import files, jpeg
from jaxvision.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Dataset,
    DatasetRequest,
    check_fraction,
)
from jaxvision.errors import UserError, listing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Held-out folder names for a `root/train` + `root/<val>` layout, in order of preference.
FOLDER_TEST_SPLITS = ("val", "validation", "test")


class ImageFileSource(Sequence):
    """Image files as the crops want them: a JPEG is a `jpeg.JpegImage` (its header read; the
    train or eval crop decodes only the scale it needs; `np.asarray` decodes it whole), any
    other file RGB `uint8 [H, W, 3]` decoded with PIL on access."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int]):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = tuple(str(p) for p in paths)
        self.labels = tuple(int(label) for label in labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        # Grayscale, palette, RGBA and 16-bit files all become 8-bit RGB so batches stack.
        return {"image": jpeg.open_image(self.paths[index], 3), "label": self.labels[index]}


def _class_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    dirs = (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(dirs, key=lambda p: p.name)


def _image_files(class_dir: pathlib.Path) -> list[pathlib.Path]:
    """The images below `class_dir`, at any depth, in ImageFolder's order: sorted(os.walk(...))
    (folders by path string), each folder's files by name."""
    walked, seen = [], set()
    for folder, subdirs, names in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up, or a second link to one folder
            subdirs.clear()
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        # os.walk lists broken links with the files: they stay in, to be counted with the
        # other unreadable files.
        images = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
        walked.append((folder, sorted(images)))
    return [pathlib.Path(folder, name) for folder, names in sorted(walked) for name in names]


def _list_classes(root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Maps each class folder name under `root` (sorted) to its sorted image files."""
    class_dirs = _class_dirs(root)
    if not class_dirs:
        raise UserError(
            f"no class folders in {root}: lay images out as {root}/<class>/*.jpg "
            "(one sub-folder per class)"
        )
    return _checked_empty(root, {d.name: _image_files(d) for d in class_dirs})


def _checked_empty(root: pathlib.Path, class_files: dict[str, list], left_out: str = "") -> dict:
    empty = [name for name, paths in class_files.items() if not paths]
    if empty:
        shown = listing((root / name for name in empty), limit=3)
        why = f" once the unreadable ones are left out ({left_out})" if left_out else ""
        raise UserError(
            f"class folder(s) with no .jpg/.jpeg/.png images{why}: {shown}; "
            "add images or remove the folder(s)"
        )
    return class_files


def _folder_split_dirs(
    root: pathlib.Path, train_split: str, test_split: str | None
) -> tuple[pathlib.Path, pathlib.Path] | None:
    """Returns (train, test) folders if `root` has a split layout, e.g. train/ and val/."""

    def has_classes(path: pathlib.Path) -> bool:
        return path.is_dir() and bool(_class_dirs(path))

    train_dir = root / train_split
    test_names = (test_split,) if test_split is not None else FOLDER_TEST_SPLITS
    test_dirs = [root / n for n in test_names if has_classes(root / n)]
    if has_classes(train_dir) and test_dirs:
        return train_dir, test_dirs[0]
    if test_split is not None:
        raise UserError(
            f"test_split={test_split!r} needs {train_dir} and {root / test_split} to both hold "
            "class folders; drop test_split to split the classes under the root instead"
        )
    if has_classes(train_dir):
        # Classes are read recursively: `train` would become one class holding all of them.
        raise UserError(
            f"{train_dir} holds class folders but {root} has no held-out folder next to it "
            f"({', '.join(FOLDER_TEST_SPLITS)}): add one, or move the class folders up into {root}"
        )
    return None


def open_request(request: DatasetRequest) -> Dataset:
    """open_dataset("folder", data_dir=..., ...)."""
    return open_folder(
        request.data_dir,
        request.train_split,
        request.test_split,
        request.test_fraction,
        request.split_seed,
        strict=request.strict,
    )


def open_folder(
    data_dir: str | None,
    train_split: str,
    test_split: str | None,
    test_fraction: float,
    split_seed: int,
    *,
    strict: bool = False,
) -> Dataset:
    """The folder dataset under `data_dir` (see `sources.open_dataset`)."""
    if data_dir is None:
        raise UserError(
            "dataset 'folder' needs data_dir=<root> with images in <root>/<class>/*.jpg"
        )
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise UserError(
            f"data_dir {root} {what}: point it at a folder laid out as <root>/<class>/*.jpg"
        )

    split_dirs = _folder_split_dirs(root, train_split, test_split)
    if split_dirs is not None:
        train_files = _list_classes(split_dirs[0])
        test_files = _list_classes(split_dirs[1])
        skipped = _drop_unreadable(root, [train_files, test_files], strict)
        class_names = tuple(train_files)
        _check_several(class_names, split_dirs[0])
        unknown = sorted(set(test_files) - set(train_files))
        if unknown:
            raise UserError(
                f"{split_dirs[1]} has classes not in {split_dirs[0]}: {', '.join(unknown[:5])}; "
                "every held-out class needs a training folder of the same name"
            )
        index = {name: i for i, name in enumerate(class_names)}
        train = _file_source((p, index[c]) for c, paths in train_files.items() for p in paths)
        test = _file_source((p, index[c]) for c, paths in test_files.items() for p in paths)
    else:
        check_fraction(test_fraction)
        class_files = _list_classes(root)
        skipped = _drop_unreadable(root, [class_files], strict)
        class_names = tuple(class_files)
        _check_several(class_names, root)
        train_pairs, test_pairs = [], []
        for label, paths in enumerate(class_files.values()):
            # One generator per class, keyed by (seed, label): a class's split does not change
            # when other classes are added or removed.
            order = np.random.default_rng([split_seed, label]).permutation(len(paths))
            num_test = min(max(1, round(len(paths) * test_fraction)), len(paths) - 1)
            test_pos = set(order[:num_test].tolist())
            for i, path in enumerate(paths):
                (test_pairs if i in test_pos else train_pairs).append((path, label))
        train, test = _file_source(train_pairs), _file_source(test_pairs)

    return Dataset(
        train=train,
        test=test,
        num_classes=len(class_names),
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=None,
        skipped=skipped,
    )


def _file_source(pairs) -> ImageFileSource:
    pairs = list(pairs)
    return ImageFileSource([p for p, _ in pairs], [label for _, label in pairs])


def _drop_unreadable(root: pathlib.Path, splits: list[dict], strict: bool) -> tuple[str, ...]:
    """Removes unreadable files from each {class: paths} of `splits` in place; returns them as
    "relative/path (why)", or raises UserError with `strict` or when a class is left empty."""
    paths = [str(p) for class_files in splits for ps in class_files.values() for p in ps]
    problems = files.check_image_files(paths)
    if not problems:
        return ()
    listed = tuple(f"{pathlib.Path(p).relative_to(root)} ({why})" for p, why in problems.items())
    shown = listing(listed)
    if strict:
        raise UserError(
            f"{len(listed)} unreadable image file(s) under {root}: {shown}; remove or replace "
            "them, or set data_strict=False to leave them out"
        )
    for class_files in splits:
        for name in class_files:
            class_files[name] = [p for p in class_files[name] if str(p) not in problems]
        _checked_empty(root, class_files, left_out=shown)
    return listed


def _check_several(class_names: Sequence[str], root: pathlib.Path) -> None:
    if len(class_names) < 2:
        raise UserError(
            f"{root} has one class folder ({', '.join(class_names)}): a classifier needs at least "
            "two, one sub-folder per class"
        )
