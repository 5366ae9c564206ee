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
  jaxvision and jax versions, the run's last evaluation metrics, and the size and sha256 of
  every other file ("files").

Loading checks a bundle whole before it predicts (jaxvision.bundle_checks): metadata.json's
layout, each file against its recorded digest, the weights and the metadata's input size
against what the exported programs take. A damaged or mismatched bundle is refused with one
line; one exported before the digests were written loads with a note.

On the machine that exported it, a bundle's predictions equal the workdir's Predictor bitwise on
CPU: the same function is compiled from the same program for each bucket.
"""

import json
import os
import sys

import flax.serialization
import jax
import numpy as np
from jax import export

import jaxvision
from jaxvision import bundle_checks, cpu_compile
from jaxvision.errors import UserError
from jaxvision.predictor import Predictor
from jaxvision.tasks.kinds import kind_of

METADATA, WEIGHTS = "metadata.json", "weights.msgpack"
FORMAT = 1  # metadata["format"]: bumped when the layout changes


def _artefact(bucket: int, kind: str = "forward") -> str:
    return f"{kind}_{bucket}.jaxexport"


def last_eval(workdir: str) -> dict:
    """The run's last evaluation record in metrics.jsonl (step and eval metrics), or {}. A line
    that is not a record (cut short by a kill) is passed over, as the training loop does."""
    path = os.path.join(workdir, "metrics.jsonl")
    found = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and any(
                    k.startswith("eval") and "/" in k for k in record
                ):
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
    buckets = predictor.buckets()
    forward = jax.jit(predictor._predict_batch)  # XLA's defaults: a CPU choice is the loader's
    for bucket in buckets:
        inputs = bundle_checks.example_inputs(predictor, bucket)
        exported = export.export(forward, platforms=tuple(platforms))(specs, inputs)
        with open(os.path.join(out, _artefact(bucket)), "wb") as f:
            f.write(exported.serialize())
    explained = None
    if predictor.task_kind.explains:
        from jaxvision.explain.service import gradcam_forward

        forward, layer = gradcam_forward(predictor)
        for bucket in buckets:
            spec = bundle_checks.example_inputs(predictor, bucket)["images"]
            exported = export.export(jax.jit(forward), platforms=tuple(platforms))(specs, spec)
            with open(os.path.join(out, _artefact(bucket, "explain")), "wb") as f:
                f.write(exported.serialize())
        explained = {"method": "gradcam", "layer": layer}
    with open(os.path.join(out, WEIGHTS), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(variables))
    written = sorted(os.listdir(out))
    metadata = {
        "format": FORMAT,
        "model": predictor.record,
        "source": source,
        "buckets": buckets,
        "platforms": list(platforms),
        "explain": explained,
        "versions": {"jaxvision": jaxvision.__version__, "jax": jax.__version__},
        "files": {name: bundle_checks.digest(os.path.join(out, name)) for name in written},
    }
    with open(os.path.join(out, METADATA), "w") as f:
        json.dump(metadata, f, indent=2)
    return metadata


def _program(data: bytes) -> export.Exported:
    return export.deserialize(bytearray(data))


class ExportedPredictor(Predictor):
    """A Predictor whose forward is a bundle's exported artefacts: the same preprocessing and
    outputs, no model code. metadata: the bundle's metadata.json. UserError (one line) for a
    bundle that is damaged, incomplete or inconsistent (jaxvision.bundle_checks)."""

    def __init__(self, path: str):
        metadata = read_metadata(path)
        self.metadata, self.record = metadata, metadata["model"]
        self.kind = self.record["task"]
        self.task_kind = kind_of(self.record)
        self.class_names = list(self.record["class_names"])
        self.image_size = self.record["image_size"]
        self.step = metadata["source"].get("step", 0)
        self.max_batch = max(metadata["buckets"])
        if sorted(metadata["buckets"]) != self.buckets():
            raise UserError(
                f"{os.path.join(path, METADATA)}: buckets {metadata['buckets']} are not "
                f"{self.buckets()}: copy the bundle {path} again whole, or export it again"
            )
        explained = bool(metadata["explain"])
        names = [WEIGHTS] + [_artefact(b) for b in metadata["buckets"]]
        names += [_artefact(b, "explain") for b in metadata["buckets"] if explained]
        note = bundle_checks.check_files(path, metadata, names)
        if note:
            print(note, file=sys.stderr, flush=True)
        weights = bundle_checks.read_file(path, WEIGHTS, flax.serialization.msgpack_restore)
        self._exported, self._explain = {}, {}
        for bucket in metadata["buckets"]:
            self._exported[bucket] = bundle_checks.read_file(path, _artefact(bucket), _program)
            if explained:
                name = _artefact(bucket, "explain")
                self._explain[bucket] = bundle_checks.read_file(path, name, _program)
        self._check(path, weights)
        self.variables = jax.device_put(weights)
        self._forwards = {}
        self.compile_with(cpu_compile.DEFAULT)
        platform = jax.default_backend()
        if platform not in metadata["platforms"]:
            raise UserError(
                f"bundle {path} was exported for {', '.join(metadata['platforms'])}, not "
                f"{platform}: export it again with --platforms={platform}"
            )

    def _check(self, path: str, weights: dict) -> None:
        """UserError unless every program takes these weights and the inputs metadata.json's
        image size and channels give, lowered for the platforms it names."""
        sources = (
            f"{WEIGHTS} holds",
            f"{METADATA}'s image_size {self.image_size} and channels "
            f"{self.record['channels']} give",
        )
        for kind, programs in (("forward", self._exported), ("explain", self._explain)):
            for bucket, exported in programs.items():
                name = _artefact(bucket, kind)
                inputs = bundle_checks.example_inputs(self, bucket)
                args = (weights, inputs if kind == "forward" else inputs["images"])
                bundle_checks.check_program(path, name, exported, args, sources)
                if kind == "forward":
                    bundle_checks.check_outputs(path, name, exported, self.class_names)
                if sorted(exported.platforms) != sorted(self.metadata["platforms"]):
                    raise UserError(
                        f"bundle {path}: {name} is lowered for {', '.join(exported.platforms)}, "
                        f"metadata.json says {', '.join(self.metadata['platforms'])}: copy the "
                        f"bundle {path} again whole, or export it again"
                    )

    def compiled_forward(self, choice: str):
        """The bundle's programs as one forward(variables, inputs), each bucket's jitted with
        `jaxvision.cpu_compile` choice `choice` (one per choice, kept)."""
        if choice not in self._forwards:
            options = cpu_compile.options(choice)
            calls = {
                bucket: jax.jit(exported.call, compiler_options=options)
                for bucket, exported in self._exported.items()
            }

            def forward(variables, inputs: dict):
                return calls[len(next(iter(inputs.values())))](variables, inputs)

            self._forwards[choice] = forward
        return self._forwards[choice]

    def explainer(self):
        """The bundle's Grad-CAM as a jaxvision.explain.service.Explainer (None without one)."""
        if not self._explain:
            return None
        from jaxvision.explain.service import Explainer

        def forward(variables, images):
            return self._explain[len(images)].call(variables, images)

        return Explainer(self, forward, self.metadata["explain"]["layer"])


def read_metadata(path: str) -> dict:
    """A bundle's metadata.json, checked (jaxvision.bundle_checks), with a one-line error when
    `path` is not a bundle or its metadata is malformed."""
    file = os.path.join(path, METADATA)
    if not os.path.isfile(file):
        raise UserError(f"{file} not found: --bundle must be a directory jaxvision export wrote")
    with open(file, "rb") as f:
        metadata = bundle_checks.parse_metadata(path, f.read())
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"bundle {path} has format {metadata.get('format')}, this jaxvision reads {FORMAT}: "
            "export it again with this version"
        )
    bundle_checks.check_schema(path, metadata)
    return metadata


def load(path: str) -> ExportedPredictor:
    """The bundle at `path` as a Predictor."""
    return ExportedPredictor(path)
