"""Blends two images: alpha blending or a seamless Laplacian-pyramid join (jaxvision.blending).

  jaxvision blend --a=A.png --b=B.jpg --out=OUT.png [--method=laplacian]
      [--mask=MASK.png | --seam=vertical|horizontal] [--levels=N] [--alpha=0.5]

B is resized to A's size. The Laplacian method takes A where the mask is white and B where it
is black (default: A's left half, B's right half); alpha blending mixes alpha * A + (1 - alpha)
* B, or uses the mask as a per-pixel alpha when one is given.
"""

import numpy as np
from absl import flags
from PIL import Image

from jaxvision import blending, cli
from jaxvision.data import files
from jaxvision.errors import UserError

FLAGS = flags.FLAGS


def blend(a_path, b_path, method, mask_path=None, seam="vertical", levels=0, alpha=0.5):
    """The blended uint8 [H, W, 3] image of the files (module docstring)."""
    a = files.load_image(a_path, 3)
    b = files.load_image(b_path, 3)
    size = (a.shape[1], a.shape[0])
    if b.shape != a.shape:
        b = np.asarray(Image.fromarray(b).resize(size, Image.Resampling.BILINEAR))
    mask = None
    if mask_path:
        mask = files.load_image(mask_path, 1)
        if mask.shape[:2] != a.shape[:2]:
            mask = np.asarray(
                Image.fromarray(mask[:, :, 0]).resize(size, Image.Resampling.BILINEAR)
            )
        mask = np.asarray(mask, np.float64).reshape(a.shape[:2]) / 255.0
    if method == "alpha":
        if not 0 <= alpha <= 1:
            raise UserError(f"--alpha={alpha} must be in [0, 1]")
        return blending.alpha_blend(a, b, alpha if mask is None else mask)
    if levels < 0:
        raise UserError(f"--levels={levels} must be >= 0 (0: as deep as the image allows)")
    mask = blending.half_mask(a.shape, seam) if mask is None else mask
    return blending.laplacian_blend(a, b, mask, levels or None)


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other programs share names)."""
    flags.DEFINE_string("a", None, "first image (its size is the output's)")
    flags.DEFINE_string("b", None, "second image")
    flags.DEFINE_string("out", None, "output PNG")
    flags.DEFINE_enum("method", "laplacian", ["laplacian", "alpha"], "how to blend")
    flags.DEFINE_string("mask", None, "grayscale mask image: white takes A, black takes B")
    flags.DEFINE_enum("seam", "vertical", ["vertical", "horizontal"], "seam without --mask")
    flags.DEFINE_integer("levels", 0, "pyramid levels (0: down to about 8 pixels)")
    flags.DEFINE_float("alpha", 0.5, "A's weight for --method=alpha without --mask")


def main(argv):
    del argv
    try:
        if not (FLAGS.a and FLAGS.b and FLAGS.out):
            raise UserError("set --a, --b and --out (two images in, one PNG out)")
        image = blend(
            FLAGS.a, FLAGS.b, FLAGS.method, FLAGS.mask, FLAGS.seam, FLAGS.levels, FLAGS.alpha
        )
        Image.fromarray(image).save(FLAGS.out, format="PNG")
    except UserError as e:
        cli.fail(str(e))
    print(f"wrote {FLAGS.out} ({FLAGS.method}, {image.shape[1]}x{image.shape[0]})")
