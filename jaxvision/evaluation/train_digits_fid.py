"""Trains the digits-FID classifier (jaxvision.evaluation.digits_fid) and writes its weights.

  python -m jaxvision.evaluation.train_digits_fid --out=jaxvision/evaluation/digits_fid.safetensors

Deterministic: the digits' train split only (open_dataset("digits"), test_fraction 0.2,
split_seed 0), each epoch every image once, upsampled 8x8 → 32x32 by a random one of PIL's
bilinear / bicubic / nearest filters and shifted by up to --shift pixels (numpy seed --seed),
Adam (--lr, cosine decay) on batches of --batch_size, dropout 0.3 before the head (JAX key
--seed); then the features' mean and standard deviation over the train split (bilinear).
Prints the test-split accuracy for each upsampling filter and, last, one JSON line.
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from jaxvision.data import open_dataset
from jaxvision.data.transforms import pad_crop
from jaxvision.evaluation import digits_fid

FLAGS = flags.FLAGS

METHODS = ("bilinear", "bicubic", "nearest")


def digits_arrays(split) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 8, 8, 1], int32 [N]) of a digits split."""
    images = np.stack([split[i]["image"] for i in range(len(split))])
    labels = np.array([split[i]["label"] for i in range(len(split))], np.int32)
    return images, labels


def epoch_images(upsampled: np.ndarray, rng: np.random.Generator, shift: int) -> np.ndarray:
    """One epoch's inputs: upsampled [M, N, 32, 32, 1] (one per filter) → [N, 32, 32, 1], each
    image by a random filter, shifted by up to `shift` pixels."""
    choice = rng.integers(0, len(upsampled), upsampled.shape[1])
    images = upsampled[choice, np.arange(upsampled.shape[1])]
    return np.stack([pad_crop(image, rng, shift) for image in images]) if shift else images


def make_train_step(model, optimizer):
    def loss_fn(params, images, labels, key):
        x = digits_fid.to_unit_range(images)
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def train_step(params, opt_state, images, labels, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def accuracy(variables: dict, images: np.ndarray, labels: np.ndarray) -> float:
    logits = jax.jit(digits_fid.digits_classify)(jnp.asarray(images), variables)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


def define_flags() -> None:
    """The command's flags, defined when it runs (not on import: other commands share
    names)."""
    flags.DEFINE_string("out", digits_fid.WEIGHTS, "Where to write the weights.")
    flags.DEFINE_integer("epochs", 40, "Passes over the train split.")
    flags.DEFINE_integer("batch_size", 64, "Training batch size.")
    flags.DEFINE_float("lr", 2e-3, "Peak Adam learning rate (cosine decay to 0).")
    flags.DEFINE_integer("shift", 2, "Largest random shift, in 32x32 pixels.")
    flags.DEFINE_integer("seed", 0, "Seed of the augmentation, order, init and dropout.")


def main(argv) -> None:
    del argv
    start = time.time()
    data = open_dataset("digits")
    train_images, train_labels = digits_arrays(data.train)
    test_images, test_labels = digits_arrays(data.test)
    upsampled = np.stack([digits_fid.upsample_digits(train_images, m) for m in METHODS])

    model = digits_fid.DigitsNet()
    key = jax.random.key(FLAGS.seed)
    init_key, key = jax.random.split(key)
    params = model.init(init_key, jnp.zeros((1, *digits_fid.IMAGE_SHAPE)))["params"]
    steps_per_epoch = len(train_labels) // FLAGS.batch_size
    schedule = optax.cosine_decay_schedule(FLAGS.lr, FLAGS.epochs * steps_per_epoch)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    train_step = make_train_step(model, optimizer)

    rng = np.random.default_rng(FLAGS.seed)
    for epoch in range(FLAGS.epochs):
        images = epoch_images(upsampled, rng, FLAGS.shift)
        order = rng.permutation(len(train_labels))
        losses = []
        for step in range(steps_per_epoch):
            index = order[step * FLAGS.batch_size : (step + 1) * FLAGS.batch_size]
            key, step_key = jax.random.split(key)
            params, opt_state, loss = train_step(
                params, opt_state, images[index], train_labels[index], step_key
            )
            losses.append(loss)
        print(f"epoch {epoch + 1}/{FLAGS.epochs} loss {float(np.mean(losses)):.4f}", flush=True)

    # The features' standardisation: the train split's embedding statistics (bilinear).
    variables = {"params": jax.device_get(params)}
    bilinear = jnp.asarray(upsampled[METHODS.index("bilinear")])
    embedding = model.apply(variables, digits_fid.to_unit_range(bilinear), features=True)
    embedding = np.asarray(embedding, np.float64)
    variables["feature_stats"] = {
        "mean": embedding.mean(0).astype(np.float32),
        "std": embedding.std(0).astype(np.float32),
    }
    digits_fid.save_variables(FLAGS.out, variables)
    result = {"out": FLAGS.out, "train_examples": len(train_labels)}
    for method in METHODS:
        test = digits_fid.upsample_digits(test_images, method)
        result[f"test_accuracy_{method}"] = accuracy(variables, test, test_labels)
        print(f"test accuracy ({method} upsampling): {result[f'test_accuracy_{method}']:.4f}")
    result |= {"test_examples": len(test_labels), "elapsed_s": round(time.time() - start, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
