"""Model compression: int8 quantization with qwix (`quantize`), magnitude pruning (`prune`) and
what they cost (`measure`). The programs are experiments.quantize and experiments.prune.

Importing it registers the training wrappers (`training`): quantization-aware training and
pruning masks, asked for by the config fields `quantize_training` and `prune_masks`."""

from jaxvision.compress import training  # noqa: F401  (registers the training wrappers)
