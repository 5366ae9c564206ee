"""Exported bundles: a trained model that predicts without jaxvision's model code, the run's
config or its data.

    jaxvision export --workdir=DIR --out=BUNDLE
    predictor = bundle.load("BUNDLE")            # the Predictor's interface and outputs
    predictor.predict([image_a, image_b])

A bundle is a directory:
- `forward_<B>.jaxexport`: the Predictor's jitted forward (network and post-processing) as a
  serialized `jax.export` artefact, one per batch bucket B (1, 2, 4, ... up to max_batch),
  lowered for every platform asked for (default cpu and cuda: a CPU machine exports for a GPU
  server). The weights are an argument, not constants, so the artefacts stay small.
- `explain_<B>.jaxexport` (classifiers): Grad-CAM of the top-1 class on the default layer
  (jaxvision.explain.service), per bucket, for the service's `POST /v1/explain`.
- `weights.msgpack`: the variables the forward takes (flax's msgpack: arrays only, no pickles).
- `metadata.json`: the workdir's model.json record (task, classes, input size, preprocessing,
  normalisation), the source workdir and checkpoint step, the buckets and platforms, the
  jaxvision and jax versions, and the run's last evaluation metrics.

On the machine that exported it, a bundle's predictions equal the workdir's Predictor bitwise on
CPU: the same function is compiled from the same program for each bucket.
"""

import json
import os

import flax.serialization
import jax
import numpy as np
from jax import export

import jaxvision
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.tasks.kinds import kind_of

METADATA, WEIGHTS = "metadata.json", "weights.msgpack"
FORMAT = 1  # metadata["format"]: bumped when the layout changes


def _artefact(bucket: int, kind: str = "forward") -> str:
    return f"{kind}_{bucket}.jaxexport"


def last_eval(workdir: str) -> dict:
    """The run's last evaluation record in metrics.jsonl (step and eval metrics), or {}."""
    path = os.path.join(workdir, "metrics.jsonl")
    found = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if any(k.startswith("eval") and "/" in k for k in record):
                    found = record
    return found


def write(predictor: Predictor, out: str, *, platforms=("cpu", "cuda"), source: dict) -> dict:
    """Exports `predictor` into the directory `out` (created; must be empty or absent);
    returns the metadata written. `source`: where the model came from (workdir, step, metrics)."""
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"--out {out} is not empty: give a new directory for the bundle")
    os.makedirs(out, exist_ok=True)
    variables = flax.serialization.to_state_dict(jax.device_get(predictor.variables))
    specs = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), variables
    )
    size, channels = predictor.image_size, predictor.record["channels"]
    example, _ = predictor.preprocess([np.zeros((size, size, channels), np.uint8)])
    buckets = predictor.buckets()
    for bucket in buckets:
        inputs = {
            k: jax.ShapeDtypeStruct((bucket, *v.shape[1:]), v.dtype) for k, v in example.items()
        }
        exported = export.export(predictor._forward, platforms=tuple(platforms))(specs, inputs)
        with open(os.path.join(out, _artefact(bucket)), "wb") as f:
            f.write(exported.serialize())
    explained = None
    if predictor.task_kind.explains:
        from jaxvision.explain.service import gradcam_forward

        forward, layer = gradcam_forward(predictor)
        images = example["images"]
        for bucket in buckets:
            spec = jax.ShapeDtypeStruct((bucket, *images.shape[1:]), images.dtype)
            exported = export.export(jax.jit(forward), platforms=tuple(platforms))(specs, spec)
            with open(os.path.join(out, _artefact(bucket, "explain")), "wb") as f:
                f.write(exported.serialize())
        explained = {"method": "gradcam", "layer": layer}
    with open(os.path.join(out, WEIGHTS), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(variables))
    metadata = {
        "format": FORMAT,
        "model": predictor.record,
        "source": source,
        "buckets": buckets,
        "platforms": list(platforms),
        "explain": explained,
        "versions": {"jaxvision": jaxvision.__version__, "jax": jax.__version__},
    }
    with open(os.path.join(out, METADATA), "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata


class ExportedPredictor(Predictor):
    """A Predictor whose forward is a bundle's exported artefacts: the same preprocessing and
    outputs, no model code. metadata: the bundle's metadata.json."""

    def __init__(self, path: str):
        metadata = read_metadata(path)
        self.metadata, self.record = metadata, metadata["model"]
        self.kind = self.record["task"]
        self.task_kind = kind_of(self.record)
        self.class_names = list(self.record["class_names"])
        self.image_size = self.record["image_size"]
        self.step = metadata["source"].get("step", 0)
        self.max_batch = max(metadata["buckets"])
        with open(os.path.join(path, WEIGHTS), "rb") as f:
            self.variables = jax.device_put(flax.serialization.msgpack_restore(f.read()))
        self._exported = {}
        for bucket in metadata["buckets"]:
            with open(os.path.join(path, _artefact(bucket)), "rb") as f:
                self._exported[bucket] = export.deserialize(bytearray(f.read()))
        self._explain = {}
        if metadata.get("explain"):
            for bucket in metadata["buckets"]:
                with open(os.path.join(path, _artefact(bucket, "explain")), "rb") as f:
                    self._explain[bucket] = export.deserialize(bytearray(f.read()))
        platform = jax.default_backend()
        if platform not in metadata["platforms"]:
            raise UserError(
                f"bundle {path} was exported for {', '.join(metadata['platforms'])}, not "
                f"{platform}: export it again with --platforms={platform}"
            )

    def _forward(self, variables, inputs: dict):
        bucket = len(next(iter(inputs.values())))
        return self._exported[bucket].call(variables, inputs)

    def explainer(self):
        """The bundle's Grad-CAM as a jaxvision.explain.service.Explainer (None without one)."""
        if not self._explain:
            return None
        from jaxvision.explain.service import Explainer

        def forward(variables, images):
            return self._explain[len(images)].call(variables, images)

        return Explainer(self, forward, self.metadata["explain"]["layer"])


def read_metadata(path: str) -> dict:
    """A bundle's metadata.json, with a one-line error when `path` is not a bundle."""
    file = os.path.join(path, METADATA)
    if not os.path.isfile(file):
        raise UserError(f"{file} not found: --bundle must be a directory jaxvision export wrote")
    with open(file) as f:
        metadata = json.load(f)
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"bundle {path} has format {metadata.get('format')}, this jaxvision reads {FORMAT}: "
            "export it again with this version"
        )
    return metadata


def load(path: str) -> ExportedPredictor:
    """The bundle at `path` as a Predictor."""
    return ExportedPredictor(path)
