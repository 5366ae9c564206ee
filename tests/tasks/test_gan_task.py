"""The GAN task: the alternating step's gradients equal the losses' own, the losses by hand, the
fixed evaluation latents."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.evaluation.generative import to_uint8
from jaxvision.models.dcgan import Discriminator, Generator
from jaxvision.tasks import gan
from jaxvision.train.state import init_model_state, init_train_state


def _task(loss="non_saturating", num_classes=10):
    generator = Generator(image_size=16, channels=1, latent_dim=8, width=4, num_classes=num_classes)
    discriminator = Discriminator(image_size=16, width=4, num_classes=num_classes)
    return gan.GAN(
        generator,
        discriminator,
        gan.GanOptions(loss, 8, num_classes),
        features=None,
        evaluator_factory=None,
    )


def _state(task, tx):
    return init_train_state(
        {
            "generator": init_model_state(task.init_generator, tx, jax.random.PRNGKey(0)),
            "discriminator": init_model_state(
                lambda r: task.init_discriminator(r, (16, 16, 1)), tx, jax.random.PRNGKey(1)
            ),
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss, num_classes", [("non_saturating", 10), ("hinge", 0)])
def test_one_step_updates_d_then_g_through_the_updated_d(loss, num_classes):
    """With SGD(lr=1), each update is minus the gradient: both must equal jax.grad of the loss
    written directly (D on reals and detached fakes; G through the *updated* D)."""
    task = _task(loss, num_classes)
    tx = optax.sgd(1.0)
    state = _state(task, tx)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (6, 16, 16, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, (6,), dtype=np.int32),
    }
    new, metrics = jax.jit(gan.make_gan_train_step(task, tx, tx))(state, batch)
    g, d = state.models["generator"], state.models["discriminator"]
    G, D = task.generator, task.discriminator
    labels = batch["label"] if num_classes else None
    z = jax.random.normal(jax.random.fold_in(g.rng, 0), (6, 8))
    real = gan.from_pixels(batch["image"])
    d_vars = new.models["discriminator"].variables

    @jax.jit
    def reference(g_variables, d_variables, d_updated):
        """The generator's training forward and both gradients, written directly: one
        program instead of three."""
        fakes, g_stats = G.apply(g_variables, z, labels, train=True, mutable=["batch_stats"])

        def d_loss(params):
            r, stats = D.apply(
                {**d_variables, "params": params}, real, labels, train=True, mutable=["batch_stats"]
            )
            f, _ = D.apply(
                {**d_variables, **stats, "params": params},
                fakes,
                labels,
                train=True,
                mutable=["batch_stats"],
            )
            return gan.discriminator_loss(r, f, loss)

        def g_loss(params):
            images, _ = G.apply(
                {**g_variables, "params": params}, z, labels, train=True, mutable=["batch_stats"]
            )
            logits, _ = D.apply(d_updated, images, labels, train=True, mutable=["batch_stats"])
            return gan.generator_loss(logits, loss)

        grads_d = jax.grad(d_loss)(d_variables["params"])
        grads_g = jax.grad(g_loss)(g_variables["params"])
        return g_stats, grads_d, grads_g

    g_stats, grads_d, grads_g = reference(g.variables, d.variables, d_vars)
    expected_d = jax.tree.map(lambda p, g_: p - g_, d.params, grads_d)
    got_d = new.models["discriminator"].params
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got_d, expected_d
    )
    expected_g = jax.tree.map(lambda p, g_: p - g_, g.params, grads_g)
    got_g = new.models["generator"].params
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got_g, expected_g
    )
    # Both models stepped once; the generator's statistics are those of its training forward.
    assert int(new.step) == 1
    assert int(new.models["generator"].step) == int(new.models["discriminator"].step) == 1
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        new.models["generator"].variables["batch_stats"],
        g_stats["batch_stats"],
    )
    assert float(metrics["train/loss"]) == pytest.approx(
        float(metrics["train/d_loss"] + metrics["train/g_loss"]), rel=1e-6
    )


def test_losses_by_hand():
    real, fake = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    softplus = lambda x: np.log1p(np.exp(x))  # noqa: E731
    ns_d = np.mean(softplus(-np.array([2.0, -1.0]))) + np.mean(softplus(np.array([0.5, -3.0])))
    assert float(gan.discriminator_loss(real, fake, "non_saturating")) == pytest.approx(ns_d)
    assert float(gan.generator_loss(fake, "non_saturating")) == pytest.approx(
        np.mean(softplus(-np.array([0.5, -3.0])))
    )
    # Hinge: relu(1 - 2) + relu(1 + 1) = 0 + 2 -> 1; relu(1.5) + relu(-2) -> 0.75.
    assert float(gan.discriminator_loss(real, fake, "hinge")) == pytest.approx(1.0 + 0.75)
    assert float(gan.generator_loss(fake, "hinge")) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="unknown GAN loss 'wasserstein'"):
        gan.GanOptions(loss="wasserstein")


@pytest.mark.slow
def test_evaluation_latents_are_fixed_by_index_and_slerp_keeps_the_ends():
    a = gan.fixed_latents(7, jnp.array([0, 1, 2, 3]), 16)
    b = gan.fixed_latents(7, jnp.array([3, 1]), 16)
    np.testing.assert_array_equal(a[3], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert float(jnp.abs(a[0] - a[1]).min()) > 0
    path = gan.slerp(a[0], a[1], jnp.linspace(0, 1, 5))
    np.testing.assert_allclose(path[0], a[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], a[1], atol=1e-5)
    pixels = to_uint8(jnp.array([-1.0, 0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(pixels, [0, 128, 255, 255])
