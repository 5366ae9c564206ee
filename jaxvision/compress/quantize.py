"""int8 post-training quantization of a classifier (or a detector: jaxvision.compress.detection)
with qwix.

Two schemes, both per-output-channel symmetric int8 weights (qwix's absmax calibration: scale =
max|w| / 127.5 per output channel, q = round-half-to-even(w / scale) saturated to [-128, 127]):

- "weights": every conv / dense kernel is stored as int8 + float32 scales and dequantized in
  the forward (q * scale), which then runs in float32. This is what int8 weights cost on a CPU:
  the weights shrink ~4x, the arithmetic does not change.
- "weights+activations": qwix's PTQ model (`qwix.PtqProvider`): convs and dense layers take
  int8 inputs too, with static per-tensor activation scales calibrated on training batches
  (`calibrate`), and run as int8 x int8 -> int32 ops.

A quantized model's variables are kept in a storage form (nested dicts of arrays: int8 values,
their scales and the float BatchNorm statistics) that checkpoints, msgpack bundles and
`jax.export` take as they are; `Scheme.restore` turns it back into what the model applies.
"""

import copy
import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import linen as nn

from jaxvision.errors import UserError
from jaxvision.registry import Registry
from jaxvision.tasks.classification import Classification

MODES = ("weights", "weights+activations")
QTYPE = jnp.int8


def quantize_kernel(kernel: jax.Array) -> qwix.QArray:
    """kernel: [..., O] float (conv HWIO or dense [in, out]) -> its int8 QArray, one scale per
    output channel: qvalue [..., O] int8, scale [1, ..., 1, O] float."""
    return qwix.quantize(kernel, QTYPE, channelwise_axes=(kernel.ndim - 1,))


def is_kernel(path: tuple, leaf) -> bool:
    """Whether a params leaf is a conv / dense kernel (quantized), not a bias or a norm."""
    return path[-1] == "kernel" and np.ndim(leaf) >= 2


def _key(entry) -> str:
    for name in ("key", "name", "idx"):
        if hasattr(entry, name):
            return str(getattr(entry, name))
    raise TypeError(f"unexpected tree path entry {entry!r}")


def to_storage(tree) -> dict:
    """A tree holding qwix QArrays / WithAux leaves -> nested dicts of its arrays, keyed by
    their paths (QArray fields and WithAux's `array` become dict levels)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    flat = {tuple(_key(p) for p in path): leaf for path, leaf in leaves}
    return flax.traverse_util.unflatten_dict(flat)


def from_storage(template, stored: dict):
    """The inverse of `to_storage`: `stored`'s arrays placed into the structure of `template`
    (the same tree, abstract or not), which supplies qwix's static fields (qtype, how)."""
    flat = flax.traverse_util.flatten_dict(stored)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    try:
        values = [flat[tuple(_key(p) for p in path)] for path, _ in leaves]
    except KeyError as missing:
        raise UserError(
            f"quantized weights lack {'/'.join(missing.args[0])}: quantize the run again"
        ) from None
    return jax.tree.unflatten(treedef, values)


def _rules(activations: bool, *, static: bool = True, rule=qwix.QuantizationRule):
    # One rule for every conv and dense op of the model. Static activation scales are
    # calibrated once and fixed at inference; dynamic ones are the absmax of each batch.
    options = {"act_qtype": QTYPE, "act_static_scale": static} if activations else {}
    return [rule(module_path=".*", weight_qtype=QTYPE, **options)]


def qat_model(model: nn.Module) -> nn.Module:
    """`model` with qwix's quantized training: int8 weights (per output channel) and int8
    activations in the forward, straight-through gradients in the backward. Activation scales
    are dynamic (each batch's absmax): qwix 0.1.8's static-scale statistics are updated inside
    the conv's custom_vjp, which leaks tracers under linen. `calibrate` then fixes static
    scales for inference, as after float training."""
    return qwix.quantize_model(model, qwix.QtProvider(_rules(True, static=False, rule=qwix.QtRule)))


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How one model is quantized: `mode` (MODES), the float model, the model that applies
    restored variables, and the abstract tree of those variables."""

    mode: str
    model: nn.Module
    applied: nn.Module
    template: dict

    @classmethod
    def of(cls, model: nn.Module, mode: str, image_shape: tuple[int, int, int]) -> "Scheme":
        """image_shape: (H, W, C) of the model's input."""
        if mode not in MODES:
            raise UserError(f"unknown quantization mode {mode!r}: use {' or '.join(MODES)}")
        example = jnp.zeros((1, *image_shape), jnp.float32)
        float_vars = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
        if mode == "weights":
            params = flax.traverse_util.flatten_dict(float_vars["params"])
            params = {
                k: jax.eval_shape(quantize_kernel, v) if is_kernel(k, v) else v
                for k, v in params.items()
            }
            template = {**float_vars, "params": flax.traverse_util.unflatten_dict(params)}
            return cls(mode, model, model, template)
        applied = qwix.quantize_model(model, qwix.PtqProvider(_rules(True)))
        template = jax.eval_shape(lambda: applied.init(jax.random.key(0), example))
        return cls(mode, model, applied, dict(template))

    def quantize(self, variables: dict, act_scales: dict | None = None) -> dict:
        """Float variables {"params", "batch_stats", ...} -> their storage form. act_scales:
        the calibrated activation scales ("weights+activations" only, from `calibrate`)."""
        params = variables["params"]
        if self.mode == "weights":
            flat = flax.traverse_util.flatten_dict(params)
            flat = {k: quantize_kernel(v) if is_kernel(k, v) else v for k, v in flat.items()}
            quantized = flax.traverse_util.unflatten_dict(flat)
        else:
            if act_scales is None:
                raise UserError("weights+activations needs calibration: run `calibrate` first")
            quantized = qwix.quantize_params(
                jax.device_put(params), self.template["params"], allow_extra_params=True
            )
            flat = flax.traverse_util.flatten_dict(quantized)
            boxes = flax.traverse_util.flatten_dict(self.template["params"])
            for path, scale in act_scales.items():  # into qwix's boxes, which know their qtype
                flat[path] = boxes[path].replace(array=scale)
            quantized = flax.traverse_util.unflatten_dict(flat)
        others = {k: v for k, v in variables.items() if k not in ("params", "quant_stats")}
        return to_storage({**others, "params": quantized})

    def restore(self, stored: dict) -> dict:
        """The storage form -> the variables `applied` takes (float kernels for "weights",
        qwix's quantized tree otherwise)."""
        tree = from_storage(self.template, stored)
        if self.mode == "weights":
            tree = jax.tree.map(
                lambda x: qwix.dequantize(x) if isinstance(x, qwix.QArray) else x,
                tree,
                is_leaf=lambda x: isinstance(x, qwix.QArray),
            )
        return tree


def calibrate(scheme: Scheme, variables: dict, batches) -> dict:
    """Static activation scales of a "weights+activations" `scheme` for float `variables`:
    each of `batches` (normalised [B, H, W, C] float inputs, eval mode) runs qwix's PTQ model
    with the int8 kernels and no activation scales, which it then creates from that batch
    (per-tensor absmax / 127.5, averaged over the batch's examples); the scales are averaged
    over the batches. Returns {path: scale} for `Scheme.quantize`."""
    params = qwix.quantize_params(
        jax.device_put(variables["params"]), scheme.template["params"], allow_extra_params=True
    )
    others = {k: v for k, v in variables.items() if k not in ("params", "quant_stats")}

    @jax.jit
    def scales(x):
        _, updates = scheme.applied.apply(
            {**others, "params": params},
            x,
            train=False,
            mutable=["params"],
            rngs={"params": jax.random.key(0)},  # unused: the scales' init reads the batch
        )
        flat = flax.traverse_util.flatten_dict(updates["params"])
        return {k: v.array for k, v in flat.items() if k[-1].endswith("_scale")}

    found = [scales(x) for x in batches]
    if not found:
        raise UserError("calibration got no batches: give --calibration_batches of at least 1")
    return jax.device_get(jax.tree.map(lambda *s: sum(s) / len(s), *found))


class QuantizedClassification(Classification):
    """Classification whose model variables are a quantized model's storage form: each forward
    restores them (int8 -> the scheme's applied tree) inside the jitted program, so the int8
    values are what is held, exported and served."""

    def __init__(self, task: Classification, scheme: Scheme):
        super().__init__(scheme.applied, mean=task.mean, std=task.std, name=task.trained)
        self.scheme = scheme

    def logits(self, models: dict, images) -> jax.Array:
        state = models[self.trained]
        live = state.replace(variables=self.scheme.restore(state.variables))
        return super().logits({**models, self.trained: live}, images)

    def gradcam_forward(self, predictor, layer: str | None = None):
        """(forward(stored variables, images), layer): Grad-CAM of `predictor` (holding this
        task) computed on its dequantized float weights (rounding has no gradient, so the int8
        program itself gives no map): what `jaxvision.explain.service` serves."""
        from jaxvision.explain import service

        view = copy.copy(predictor)
        view.task = Classification(
            self.scheme.model, mean=self.mean, std=self.std, name=self.trained
        )
        view.variables = dequantized(self.scheme, predictor.variables)
        forward, layer = service.gradcam_forward(view, layer)

        def quantized_forward(stored, images):
            return forward(dequantized(self.scheme, stored), images)

        return quantized_forward, layer


# task kind -> the task class that runs a quantized model of that kind: (task, scheme) -> task.
QUANTIZED_TASKS = Registry("quantized task kind")
QUANTIZED_TASKS.declare("classification", "jaxvision.compress.quantize:QuantizedClassification")
QUANTIZED_TASKS.declare("detection", "jaxvision.compress.detection:QuantizedDetection")


def quantized_task(task, scheme: Scheme):
    """`task` (Classification or Detection) running `scheme`'s storage form: a
    QuantizedClassification or a jaxvision.compress.detection.QuantizedDetection."""
    if task.kind not in QUANTIZED_TASKS:
        raise QUANTIZED_TASKS.unknown(
            task.kind, f"a {task.kind} model cannot be quantized", "quantizable kinds are"
        )
    return QUANTIZED_TASKS[task.kind](task, scheme)


def quantized_record_task(task, record: dict):
    """`task` running the int8 weights that a model.json record's "quantization" describes
    (jaxvision.tasks.TASK_WRAPPERS): what a Predictor of a quantized workdir holds."""
    shape = (record["image_size"], record["image_size"], record["channels"])
    return quantized_task(task, Scheme.of(task.model, record["quantization"]["mode"], shape))


def dequantized(scheme: Scheme, stored: dict) -> dict:
    """The float variables of the float model that a storage form stands for: int8 kernels
    times their scales, activation scales left out (they have no float counterpart)."""
    restored = scheme.restore(stored)
    flat = flax.traverse_util.flatten_dict(restored["params"])
    params = {}
    for path, leaf in flat.items():
        if hasattr(leaf, "how") and hasattr(leaf, "array"):  # qwix's WithAux box (not public)
            if not isinstance(leaf.array, qwix.QArray):
                continue  # an activation scale
            leaf = leaf.array
        params[path] = qwix.dequantize(leaf) if isinstance(leaf, qwix.QArray) else leaf
    return {**restored, "params": flax.traverse_util.unflatten_dict(params)}


def weight_bytes(variables) -> int:
    """Bytes of every array in `variables` (storage form or float)."""
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(variables)))
