"""What compression adds to a training run, registered with `jaxvision.train.wrappers` when this
module is imported (by a program whose config asks for it; inference never imports it):

- `quantize_training="int8"`: the model trains with int8 weights and activations in the forward
  (qwix's quantization-aware training, `quantize.qat_model`);
- `prune_masks=<masks.npz>`: the optimizer re-applies the masks after every step
  (`prune.keep_masked`), so pruned weights stay zero while the rest fine-tune.
"""

import optax

from jaxvision.compress.prune import keep_masked, load_masks
from jaxvision.compress.quantize import qat_model
from jaxvision.train import wrappers


@wrappers.register_model_wrapper("quantize_training")
def quantization_aware(model, mode: str):
    del mode  # "int8", the only one (jaxvision.config_checks)
    return qat_model(model)


@wrappers.register_optimizer_wrapper("prune_masks")
def pruned(tx: optax.GradientTransformation, path: str) -> optax.GradientTransformation:
    return optax.chain(tx, keep_masked(load_masks(path)))
