"""A small SSD on the embedded shapes set: the SSD family (default boxes, hard negative mining)
on 2 CPU cores, no download.

The shapes set of configs/detection/retinanet_shapes.py with the schedule it was measured with
(16,000 training images, 4,000 AdamW steps of 16 at lr 2e-3); an SSD on a VGG-16 at width 16 over
128x128 inputs (maps 16, 8, 4, 2, 1), trained from scratch with SSD's photometric distortion
and flips.

  python -m experiments.detection --config=experiments/configs/detection/ssd_shapes.py --workdir=DIR

Expected: see experiments/RESULTS.md ("Detection").
"""

import ml_collections

from experiments.configs.detection import retinanet_shapes


def get_config():
    config = retinanet_shapes.get_config()
    config.model = "ssd128_vgg16_small"
    config.model_kwargs = ml_collections.ConfigDict()  # the preset's VGG at width 16
    config.photometric = True
    config.detection = ml_collections.ConfigDict()  # SSD's own matching and loss
    config.dataset_options = ml_collections.ConfigDict()  # the set's 16,000 training images
    config.total_steps = 4000
    config.learning_rate = 2e-3
    return config
