"""An image folder for classification from jaxvision's synthetic shapes set (no download).

  jaxvision make-shapes-folder --out=ROOT [--seed=0] [--classes=circle,rectangle,...]
      [--num_train=1200] [--num_test=300] [--size=32]

Every labelled shape of shapes images 0..N-1 (render at 96 x 96, up to 3 shapes each) becomes
one crop: its box made square, grown by 1/4 of context on each side (clipped to the image),
resized to `size` x `size` RGB with bilinear filtering, written as
ROOT/{train,val}/<class>/<split>_<image>_<row>.png. The shapes train split feeds ROOT/train,
the test split ROOT/val, so the two never share an image. Neighbouring shapes may show in the
context, as in a detector's crops. Deterministic: the same arguments write the same files.
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

from jaxvision.data import shapes

RENDER_SIZE = 96
MAX_OBJECTS = 3
CONTEXT = 0.25  # of the box side, on each side


def crop_box(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """A square crop around `box` (xyxy pixels) with context, resized: uint8 [size, size, 3]."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * CONTEXT)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    right, bottom = min(w, round(cx + side / 2)), min(h, round(cy + side / 2))
    crop = Image.fromarray(image[top:bottom, left:right])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def write_split(root, split, count, seed, classes, size) -> dict:
    counts = dict.fromkeys(classes, 0)
    wanted = {shapes.CLASS_NAMES.index(c): c for c in classes}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    index = 0
    # Images are drawn until the split holds `count` crops per class (no class is short).
    while min(counts.values()) < count:
        record, _ = shapes.render(seed, shapes.SPLITS[split], index, RENDER_SIZE, MAX_OBJECTS)
        for row, (box, label) in enumerate(zip(record["boxes"], record["classes"], strict=True)):
            name = wanted.get(int(label))
            if name is None or counts[name] >= count:
                continue
            crop = crop_box(record["image"], box, size)
            Image.fromarray(crop).save(root / name / f"{split}_{index:06d}_{row}.png")
            counts[name] += 1
        index += 1
    return counts


def main(argv: list[str]) -> None:
    """argv: ["jaxvision make-shapes-folder", --flags ...]."""
    parser = argparse.ArgumentParser(prog=argv[0], description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", default=",".join(shapes.CLASS_NAMES[1:]))
    parser.add_argument("--num_train", type=int, default=1200, help="crops per class")
    parser.add_argument("--num_test", type=int, default=300, help="crops per class")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv[1:])
    classes = args.classes.split(",")
    unknown = sorted(set(classes) - set(shapes.CLASS_NAMES[1:]))
    if unknown:
        parser.error(f"unknown classes {unknown}: choose from {shapes.CLASS_NAMES[1:]}")
    root = pathlib.Path(args.out)
    for folder, split, count in (
        ("train", "train", args.num_train),
        ("val", "test", args.num_test),
    ):
        counts = write_split(root / folder, split, count, args.seed, classes, args.size)
        print(folder, counts)
