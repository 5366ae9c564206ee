"""Model compression: int8 quantization with qwix (`quantize`), magnitude pruning (`prune`) and
what they cost (`measure`). The programs are experiments.quantize and experiments.prune."""
