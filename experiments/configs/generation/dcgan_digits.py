"""Class-conditional DCGAN on the embedded handwritten digits, upsampled to 32x32 (no download).

  python -m experiments.gan --workdir=DIR [--config.conditional=False] [--config.gan_loss=hinge]

Generator and discriminator of width 32 (DCGAN's layout at 32x32: 4 -> 8 -> 16 -> 32), Adam
(2e-4, b1 = 0.5) for each, batch 64, one D and one G update per step, an EMA of the generator.
Every evaluation compares 1,437 fakes (fixed latents, the train split's labels) with the 1,437
train images in the digits-FID feature space and writes a sample grid and an interpolation
strip under plots/. Measured in experiments/RESULTS.md ("Generation").
"""

from experiments.configs.common import base_config, gan_fields


def get_config():
    config = gan_fields(base_config())
    config.dataset = "digits"
    config.image_size = 32
    config.flip = False  # a mirrored digit is another shape
    config.conditional = True
    config.batch_size = 64
    config.total_steps = 3000
    config.eval_every_steps = 1000
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    return config
