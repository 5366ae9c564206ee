"""Image generation with a GAN: a generator and a discriminator, each with its optimizer, in one
train state ("generator", "discriminator"), trained by alternating updates.

One train step (as the DCGAN reference): draw z; the generator's forward pass makes the fakes
once; the discriminator takes one step on real vs (detached) fakes; then the generator takes one
step through the updated discriminator on the same fakes. Losses: the non-saturating one
(Goodfellow et al. 2014: D minimises softplus(-D(x)) + softplus(D(G(z))), G minimises
softplus(-D(G(z)))) or the hinge (D: relu(1 - D(x)) + relu(1 + D(G(z))), G: -D(G(z))).

Evaluation runs through the shared loop like any task: each eval example i gets the fixed
latent z_i (drawn from the task's noise seed and i, the same at every evaluation), the fake
G(z_i, label_i) is made beside the real image, and both go through a feature extractor; the
evaluator turns the features into FID / KID, the fakes' predicted classes into the conditional
accuracy, and the first fakes and an interpolation strip into pictures (a training film).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxvision.evaluation.generative import to_uint8
from jaxvision.state import TrainState
from jaxvision.train.ema import ema_update

LOSSES = ("non_saturating", "hinge")
STRIP_STEPS = 10  # images per row of the interpolation strip


@dataclasses.dataclass(frozen=True)
class GanOptions:
    """loss: one of LOSSES. latent_dim: size of z. num_classes: > 0 trains a class-conditional
    GAN. noise_seed: the fixed latents of evaluation."""

    loss: str = "non_saturating"
    latent_dim: int = 100
    num_classes: int = 0
    noise_seed: int = 1234

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown GAN loss {self.loss!r}: use one of {', '.join(LOSSES)}")


def discriminator_loss(real_logits, fake_logits, loss: str) -> jax.Array:
    if loss == "hinge":
        return jax.nn.relu(1 - real_logits).mean() + jax.nn.relu(1 + fake_logits).mean()
    return jax.nn.softplus(-real_logits).mean() + jax.nn.softplus(fake_logits).mean()


def generator_loss(fake_logits, loss: str) -> jax.Array:
    if loss == "hinge":
        return -fake_logits.mean()
    return jax.nn.softplus(-fake_logits).mean()


def from_pixels(images: jax.Array) -> jax.Array:
    """[B, H, W, C] uint8 -> float32 in [-1, 1], the generator's range."""
    return images.astype(jnp.float32) / 127.5 - 1


def fixed_latents(seed: int, index: jax.Array, latent_dim: int) -> jax.Array:
    """index: [B] int -> z [B, latent_dim]: latent i is the same wherever and whenever drawn."""
    key = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (latent_dim,)))(index)


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """Spherical interpolation between latents a, b: [D] at t: [T] -> [T, D] (for Gaussian
    latents it keeps the norm typical, unlike a straight line)."""
    cos = jnp.dot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    so = jnp.sin(omega)
    t = t[:, None]
    return (jnp.sin((1 - t) * omega) / so) * a + (jnp.sin(t * omega) / so) * b


class GAN:
    """The GAN task for `generator` and `discriminator` (jaxvision.models.dcgan).

    features: `uint8 images [B, S, S, C] -> (features [B, D] float, logits [B, K] or None)`,
        jittable: what FID / KID compare, and a classifier's reading of conditional samples.
    evaluator_factory: `class_names -> evaluator` (jaxvision.evaluation.generative).
    Batches: {"image": [B, S, S, C] uint8, "label": [B] int32}; in evaluation also "index" [B]
    int32 (the example's position: its fixed latent) and "mask" [B] bool.
    """

    kind = "gan"
    trained = "generator"  # the model evaluated, averaged (EMA) and exported
    head_paths: list = []

    def __init__(
        self,
        generator,
        discriminator,
        options: GanOptions,
        features: Callable,
        evaluator_factory: Callable,
    ):
        self.generator, self.discriminator, self.options = generator, discriminator, options
        self.features, self.evaluator_factory = features, evaluator_factory

    @property
    def conditional(self) -> bool:
        return self.options.num_classes > 0

    def init_generator(self, rng):
        z = jnp.zeros((1, self.options.latent_dim))
        return self.generator.init(rng, z, jnp.zeros((1,), jnp.int32), train=False)

    def init_discriminator(self, rng, image_shape):
        x = jnp.zeros((1, *image_shape))
        return self.discriminator.init(rng, x, jnp.zeros((1,), jnp.int32), train=False)

    def sample(self, variables: dict, z: jax.Array, labels: jax.Array | None) -> jax.Array:
        """Generator in eval mode: z [B, latent_dim] (+ labels [B]) -> uint8 [B, S, S, C]."""
        return to_uint8(self.generator.apply(variables, z, labels, train=False))

    def evaluator(self, class_names):
        return self.evaluator_factory(class_names)

    def eval_outputs(self, models: dict, batch: dict) -> dict:
        """Real and fake features, the fakes' requested and predicted labels, the fakes and an
        interpolation strip (conditional: one row per class) for the pictures."""
        variables = models["generator"].variables
        labels = batch["label"] if self.conditional else None
        z = fixed_latents(self.options.noise_seed, batch["index"], self.options.latent_dim)
        fakes = self.sample(variables, z, labels)
        real_features, _ = self.features(batch["image"])
        fake_features, fake_logits = self.features(fakes)
        strip = jax.eval_shape(self.interpolation_strip, variables)
        outputs = {
            "real_features": real_features,
            "fake_features": fake_features,
            "samples": fakes,
            "sample_labels": batch["label"],
            # Drawn in the batch that holds example 0 (the first), zeros in the others: the
            # pictures need one strip per evaluation, not one per batch.
            "strip": jax.lax.cond(
                jnp.any((batch["index"] == 0) & batch["mask"]),
                self.interpolation_strip,
                lambda v: jnp.zeros(strip.shape, strip.dtype),
                variables,
            ),
            "mask": batch["mask"],
        }
        if self.conditional and fake_logits is not None:  # what a classifier reads in them
            outputs["fake_labels"] = batch["label"]
            outputs["fake_predicted"] = jnp.argmax(fake_logits, -1).astype(jnp.int32)
        return outputs

    def interpolation_strip(self, variables: dict) -> jax.Array:
        """uint8 [rows, STRIP_STEPS, S, S, C]: fakes along a slerp between two fixed latents
        (one row per class when conditional, else one row)."""
        ends = fixed_latents(self.options.noise_seed + 1, jnp.arange(2), self.options.latent_dim)
        z = slerp(ends[0], ends[1], jnp.linspace(0.0, 1.0, STRIP_STEPS))
        rows = max(self.options.num_classes, 1)
        labels = jnp.repeat(jnp.arange(rows), STRIP_STEPS) if self.conditional else None
        fakes = self.sample(variables, jnp.tile(z, (rows, 1)), labels)
        return fakes.reshape(rows, STRIP_STEPS, *fakes.shape[1:])


@dataclasses.dataclass(frozen=True)
class GanUpdate:
    """ema_decay: > 0 keeps an EMA of the generator's weights (evaluated as <eval>_ema)."""

    ema_decay: float = 0.0
    ema_warmup: bool = True


def make_gan_train_step(
    task: GAN,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    options: GanUpdate = GanUpdate(),
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """`train_step(state, batch) -> (state, metrics)`: one discriminator then one generator
    update (module docstring). metrics: train/loss (d_loss + g_loss), train/d_loss,
    train/g_loss, train/d_real and train/d_fake (mean sigmoid of D on reals / fakes, before the
    D update), train/g_grad_norm, train/d_grad_norm."""
    G, D, loss = task.generator, task.discriminator, task.options.loss

    def train_step(state: TrainState, batch: dict):
        g, d = state.models["generator"], state.models["discriminator"]
        rng = jax.random.fold_in(g.rng, state.step)
        real = from_pixels(batch["image"])
        labels = batch["label"] if task.conditional else None
        z = jax.random.normal(rng, (real.shape[0], task.options.latent_dim))

        # The fakes, once; their vjp carries the generator's gradient after the D update.
        def generate(params):
            return G.apply(
                {**g.variables, "params": params}, z, labels, train=True, mutable=["batch_stats"]
            )

        fakes, g_vjp, g_stats = jax.vjp(generate, g.params, has_aux=True)

        def d_loss_fn(params):
            variables = {**d.variables, "params": params}
            real_logits, stats = D.apply(
                variables, real, labels, train=True, mutable=["batch_stats"]
            )
            variables = {**variables, **stats}
            fake_logits, stats = D.apply(
                variables, jax.lax.stop_gradient(fakes), labels, train=True, mutable=["batch_stats"]
            )
            return discriminator_loss(real_logits, fake_logits, loss), (
                stats,
                real_logits,
                fake_logits,
            )

        (d_loss, (d_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True
        )(d.params)
        updates, d_opt = d_tx.update(d_grads, d.opt_state, d.params)
        d_params = optax.apply_updates(d.params, updates)
        d = d.replace(
            variables={**d.variables, **d_stats, "params": d_params},
            opt_state=d_opt,
            step=d.step + 1,
        )

        # The generator's step through the updated discriminator (its statistics are left as
        # the D step set them: only D's own step updates them).
        def g_loss_fn(images):
            logits, _ = D.apply(d.variables, images, labels, train=True, mutable=["batch_stats"])
            return generator_loss(logits, loss)

        g_loss, image_grads = jax.value_and_grad(g_loss_fn)(fakes)
        (g_grads,) = g_vjp(image_grads)
        updates, g_opt = g_tx.update(g_grads, g.opt_state, g.params)
        g_params = optax.apply_updates(g.params, updates)
        ema = g.ema_params
        if ema is not None:
            ema = ema_update(ema, g_params, g.step, options.ema_decay, options.ema_warmup)
        g = g.replace(
            variables={**g.variables, **g_stats, "params": g_params},
            opt_state=g_opt,
            step=g.step + 1,
            ema_params=ema,
        )
        metrics = {
            "train/loss": d_loss + g_loss,
            "train/d_loss": d_loss,
            "train/g_loss": g_loss,
            "train/d_real": jax.nn.sigmoid(real_logits).mean(),
            "train/d_fake": jax.nn.sigmoid(fake_logits).mean(),
            "train/g_grad_norm": optax.tree.norm(g_grads),
            "train/d_grad_norm": optax.tree.norm(d_grads),
        }
        models = {**state.models, "generator": g, "discriminator": d}
        return state.replace(step=state.step + 1, models=models), metrics

    return train_step
