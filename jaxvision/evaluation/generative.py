"""The generative evaluator: FID, KID and conditional accuracy of generated samples.

It serves a task through the shared loop's evaluator protocol (`add(outputs, batch)` for each
eval batch, then `result(prefix, workdir=, step=)`): the task's jitted `eval_outputs` computes
features of the batch's real images and of as many generated ones (Inception pool3 or digits-FID
features, see jaxvision.models.fid_inception and jaxvision.evaluation.digits_fid) and, for a
class-conditional generator, the labels it asked for and the labels a classifier reads; the
evaluator keeps them on the host and at the end computes the metrics with
jaxvision.evaluation.fid, which equal pytorch-fid's and torch-fidelity's on the same features.

eval_outputs keys (jax or numpy arrays, leading dimension B, the batch):
  "real_features"  [B, D] float: features of the batch's real images (may be left out when the
                   evaluator was given `real_features` up front, e.g. precomputed once);
  "fake_features"  [B, D] float: features of B generated images;
  "mask"           [B] bool: rows that count (False: padding of the split's last batch); it
                   applies to the real rows, and to the fake rows unless "fake_mask" is given;
  "fake_mask"      [B] bool, optional: fake rows that count;
  "fake_labels"    [B] int, optional: the labels the conditional generator was given;
  "fake_predicted" [B] int, optional (with "fake_labels"): the classifier's argmax on the
                   generated images; its agreement with "fake_labels" is the conditional
                   accuracy.
"""

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxvision.errors import UserError
from jaxvision.evaluation import fid

FEATURE_KINDS = ("digits", "inception")


def to_uint8(images) -> jnp.ndarray:
    """A generator's output in [-1, 1] → uint8 [0, 255], rounded as a saved PNG would be (FID
    protocols measure the quantised images). Jittable."""
    return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def feature_function(kind: str, weights: str | None = None) -> Callable:
    """A jittable `images uint8 [B, H, W, C] -> features [B, D] float32` for the evaluator.

    kind: "digits" — digits-FID's 64-d features (images [B, 32, 32, 1]; the weights shipped
    with jaxvision, not comparable to Inception FID); "inception" — the FID Inception's pool3
    (2,048-d; any size, grey or RGB), with pytorch-fid's weights from `weights` (a
    .safetensors, see jaxvision.weights.fid_inception): comparable to published FIDs.
    """
    if kind == "digits":
        from jaxvision.evaluation.digits_fid import digits_features

        return digits_features
    if kind == "inception":
        if weights is None:
            raise UserError(
                "Inception FID features need pytorch-fid's weights: pass the path of "
                "pt_inception-2015-12-05 converted to .safetensors (jaxvision.weights."
                "fid_inception explains how), or use the 'digits' features"
            )
        from jaxvision.models.fid_inception import fid_inception_features
        from jaxvision.weights.fid_inception import load_fid_inception

        variables = load_fid_inception(weights)
        return lambda images: fid_inception_features(variables, images)
    raise UserError(f"unknown FID features {kind!r}: use one of {', '.join(FEATURE_KINDS)}")


class GenerativeEvaluator:
    """Accumulates real and generated features (and requested vs read labels) over a pass.

    evaluator.add(outputs)  # each batch: see the module docstring for the keys
    metrics = evaluator.result("eval", workdir=..., step=...)
    # {"eval/fid", "eval/kid", "eval/kid_std"} (+ "eval/cond_acc" with labels)

    real_features: [N, D], the real set's features when they are known up front (then batches
    need no "real_features"; any they carry are ignored). kid_subsets / kid_subset_size /
    kid_seed: KID's subsets (torch-fidelity's defaults; smaller sets use subsets of all of
    the smaller count).
    """

    def __init__(
        self,
        *,
        real_features=None,
        kid_subsets: int = fid.KID_SUBSETS,
        kid_subset_size: int = fid.KID_SUBSET_SIZE,
        kid_seed: int = fid.KID_SEED,
    ):
        self.fixed_real = None if real_features is None else np.asarray(real_features)
        self.kid_options = dict(subsets=kid_subsets, subset_size=kid_subset_size, seed=kid_seed)
        self.real, self.fake, self.requested, self.read = [], [], [], []

    def add(self, outputs: dict, batch: dict | None = None) -> None:
        """Keeps one eval batch's real rows (every process's, on every process: with several
        processes every process must call `add`). batch: unused."""
        if jax.process_count() > 1:
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        else:
            outputs = jax.device_get(outputs)
        out = {k: np.asarray(v) for k, v in outputs.items()}
        if "fake_features" not in out:
            raise UserError(
                "the generative evaluator needs 'fake_features' in the eval outputs; got "
                f"{', '.join(sorted(out))}"
            )
        size = len(out["fake_features"])
        mask = out.get("mask", np.ones(size, bool)).astype(bool)
        fake_mask = out.get("fake_mask", mask).astype(bool)
        if self.fixed_real is None:
            if "real_features" not in out:
                raise UserError(
                    "the generative evaluator needs 'real_features' in the eval outputs, or "
                    "real_features given when it is made"
                )
            self.real.append(out["real_features"][mask])
        self.fake.append(out["fake_features"][fake_mask])
        if "fake_labels" in out:
            if "fake_predicted" not in out:
                raise UserError(
                    "eval outputs have 'fake_labels' but no 'fake_predicted': add the "
                    "classifier's labels of the generated images for the conditional accuracy"
                )
            self.requested.append(out["fake_labels"][fake_mask].astype(np.int64))
            self.read.append(out["fake_predicted"][fake_mask].astype(np.int64))

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """(real [N1, D], fake [N2, D]) float64: what was kept so far."""
        real = self.fixed_real if self.fixed_real is not None else _rows(self.real)
        return np.asarray(real, np.float64), np.asarray(_rows(self.fake), np.float64)

    def result(self, prefix: str, *, workdir: str | None = None, step: int = 0) -> dict:
        """{"<prefix>/fid", "/kid", "/kid_std"} and, when labels came, "/cond_acc" (the share
        of generated images the classifier reads as the requested label). With `workdir`,
        process 0 also writes `<workdir>/eval/<prefix>_step<N>.json` (the counts)."""
        real, fake = self.features()
        if len(real) < 2 or len(fake) < 2:
            raise UserError(
                f"FID needs at least 2 real and 2 generated images, got {len(real)} and "
                f"{len(fake)}: evaluate on more examples"
            )
        kid, kid_std = fid.kernel_inception_distance(real, fake, **self.kid_options)
        metrics = {
            f"{prefix}/fid": fid.fid_from_features(real, fake),
            f"{prefix}/kid": kid,
            f"{prefix}/kid_std": kid_std,
        }
        if self.requested:
            requested, read = np.concatenate(self.requested), np.concatenate(self.read)
            metrics[f"{prefix}/cond_acc"] = float(np.mean(requested == read))
        if workdir is not None and jax.process_index() == 0:
            record = {"step": step, **metrics, "real": len(real), "fake": len(fake)}
            if self.requested:
                record["per_label_accuracy"] = _per_label(requested, read)
            os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
            with open(os.path.join(workdir, "eval", f"{prefix}_step{step}.json"), "w") as f:
                json.dump(record, f)
        return metrics


def _rows(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _per_label(requested: np.ndarray, read: np.ndarray) -> dict:
    """{label: accuracy of the samples asked for that label}."""
    labels = np.unique(requested)
    return {str(label): float(np.mean(read[requested == label] == label)) for label in labels}
