"""A small SSD on the embedded shapes set: the SSD family (default boxes, hard negative mining)
on 2 CPU cores, no download.

The shapes set of configs/shapes_retinanet.py; an SSD on a VGG-16 at width 16 over 128x128
inputs (maps 16, 8, 4, 2, 1), trained from scratch with SSD's photometric distortion and
flips.

  python -m experiments.detection --config=experiments/configs/shapes_ssd.py --workdir=DIR

Expected: see experiments/RESULTS.md ("Detection").
"""

from experiments.configs import shapes_retinanet


def get_config():
    config = shapes_retinanet.get_config()
    config.model = "ssd128_vgg16_small"
    config.photometric = True
    return config
