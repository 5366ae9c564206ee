"""Pictures of a generator's samples: grids from fixed noise (one per evaluation, so that they
play as a film of training) and latent interpolation strips."""

import os

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, columns: int, *, pad: int = 2, scale: int = 1) -> np.ndarray:
    """images: uint8 [N, H, W, C] -> one uint8 [rows * (H*scale + pad) + pad, ..., C] picture,
    row-major, `pad` black pixels between and around the tiles, each tile enlarged `scale`
    times (nearest neighbour: every sample pixel stays visible)."""
    images = np.asarray(images)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"image_grid needs uint8 [N, H, W, C] images, got shape {images.shape}")
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def write_png(path: str, image: np.ndarray) -> str:
    """Writes uint8 [H, W, 1 | 3] as a PNG (atomically: a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pixels = image[:, :, 0] if image.shape[-1] == 1 else image
    tmp = path + ".tmp"
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


class SamplePictures:
    """Keeps the first `count` fakes of an evaluation pass (their latents are fixed, so the
    same tiles every time) and the interpolation strip; writes
    `plots/<prefix>_samples_<step>.png` (conditional: ordered by requested class) and
    `plots/<prefix>_interpolation_<step>.png`."""

    def __init__(self, count: int = 64, scale: int = 2):
        self.count, self.scale = count, scale
        self.samples, self.labels, self.strip = [], [], None

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        kept = sum(len(s) for s in self.samples)
        if kept < self.count:
            mask = np.asarray(outputs["mask"] if "mask" in outputs else batch["mask"], bool)
            take = np.asarray(outputs["samples"])[mask][: self.count - kept]
            self.samples.append(take)
            self.labels.append(np.asarray(outputs["sample_labels"])[mask][: len(take)])
        if self.strip is None:
            self.strip = np.asarray(outputs["strip"])

    def write(self, workdir: str, step: int, prefix: str, conditional: bool) -> list[str]:
        plots = os.path.join(workdir, "plots")
        samples = np.concatenate(self.samples)
        columns = 8
        if conditional:
            order = np.argsort(np.concatenate(self.labels), kind="stable")
            samples = samples[order]
        paths = [
            write_png(
                os.path.join(plots, f"{prefix}_samples_{step}.png"),
                image_grid(samples, columns, scale=self.scale),
            )
        ]
        rows, steps = self.strip.shape[:2]
        strip = self.strip.reshape(rows * steps, *self.strip.shape[2:])
        paths.append(
            write_png(
                os.path.join(plots, f"{prefix}_interpolation_{step}.png"),
                image_grid(strip, steps, scale=self.scale),
            )
        )
        return paths


class GanEvaluator:
    """An evaluation of a generator: `metrics` (FID / KID / conditional accuracy, from
    jaxvision.evaluation.generative) plus the pictures."""

    def __init__(self, metrics, conditional: bool, pictures: SamplePictures | None = None):
        self.metrics, self.conditional = metrics, conditional
        self.pictures = pictures or SamplePictures()

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        self.metrics.add(outputs, batch)
        self.pictures.add(outputs, batch)

    def result(self, prefix: str, *, workdir: str | None = None, step: int = 0) -> dict:
        result = self.metrics.result(prefix, workdir=workdir, step=step)
        if workdir is not None:
            self.pictures.write(workdir, step, prefix, self.conditional)
        return result
