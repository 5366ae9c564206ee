"""DCGAN geometry: the PyTorch reference's parameter counts, shapes and ranges, conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.dcgan import Discriminator, Generator, num_stages
from jaxvision.train.state import count_params


def test_parameter_counts_equal_the_pytorch_dcgan_reference():
    # pytorch/examples dcgan at 64x64 RGB, nz 100, ngf = ndf = 64 (counted with torch).
    g = Generator(image_size=64, channels=3, latent_dim=100, width=64)
    d = Discriminator(image_size=64, width=64)
    # Traced abstractly: the shapes of the variables, nothing compiled or run.
    g_vars = jax.eval_shape(g.init, jax.random.PRNGKey(0), jnp.zeros((1, 100)))
    d_vars = jax.eval_shape(d.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    assert count_params(g_vars["params"]) == 3_576_704
    assert count_params(d_vars["params"]) == 2_765_568


@pytest.mark.slow
def test_shapes_ranges_and_the_papers_init():
    g = Generator(image_size=32, channels=1, latent_dim=16, width=8)
    d = Discriminator(image_size=32, width=8)

    @jax.jit  # one program for the inits and forwards
    def run():
        z = jax.random.normal(jax.random.PRNGKey(1), (5, 16))
        g_vars = g.init(jax.random.PRNGKey(0), z)
        images = g.apply(g_vars, z)
        d_vars = d.init(jax.random.PRNGKey(0), images)
        return g_vars, images, d.apply(d_vars, images)

    g_vars, images, logits = run()
    assert images.shape == (5, 32, 32, 1) and images.dtype == jnp.float32
    assert float(jnp.abs(images).max()) <= 1.0
    assert logits.shape == (5,)
    kernels = [x for x in jax.tree.leaves(g_vars["params"]) if x.ndim == 4]
    stds = [float(np.std(k)) for k in kernels]
    assert all(0.015 < s < 0.025 for s in stds), stds  # N(0, 0.02)


@pytest.mark.slow
def test_conditional_models_depend_on_the_label():
    g = Generator(image_size=16, channels=3, latent_dim=8, width=8, num_classes=10)
    d = Discriminator(image_size=16, width=8, num_classes=10)

    @jax.jit  # one program for the inits and forwards
    def run():
        z = jnp.tile(jax.random.normal(jax.random.PRNGKey(1), (1, 8)), (2, 1))
        labels = jnp.array([3, 7])
        g_vars = g.init(jax.random.PRNGKey(0), z, labels)
        images = g.apply(g_vars, z, labels)
        twice = g.apply(g_vars, z, jnp.array([3, 3]))
        d_vars = d.init(jax.random.PRNGKey(0), images, labels)
        same = jnp.stack([images[0], images[0]])
        return g_vars, images, twice, d_vars, d.apply(d_vars, same, labels)

    g_vars, images, twice, d_vars, logits = run()
    assert images.shape == (2, 16, 16, 3)
    # Same z, two classes: the outputs differ (little at init: the embeddings start near 1 / 0).
    assert float(jnp.abs(images[0] - images[1]).max()) > 1e-4
    # Same z, same class: the same image, up to the float noise of a batched conv whose rows may
    # be summed in different orders (seen at 1e-10 on AMD EPYC), far below the class gap above.
    assert float(jnp.abs(twice[0] - twice[1]).max()) < 1e-7
    assert abs(float(logits[0] - logits[1])) > 1e-6  # the projection term differs by class
    assert "project" in d_vars["params"]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(g_vars)[0]]
    assert any("ConditionalBatchNorm_0']['scale" in p for p in paths), paths


@pytest.mark.parametrize("size", [4, 24, 33])
def test_image_sizes_that_are_not_4_times_a_power_of_two_are_refused(size):
    with pytest.raises(ValueError, match="image_size must be 4 \\* 2\\^k"):
        num_stages(size)
