"""Model compression: int8 quantization with qwix (`quantize`), magnitude pruning (`prune`) and
what they cost (`measure`). The programs are jaxvision quantize and jaxvision prune."""
