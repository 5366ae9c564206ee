"""The PyTorch peers of the benchmarks: torch and torchvision when they are wanted and installed."""


def import_torch(mode: str):
    """(torch, torchvision), or None. mode: "no" (never), "auto" (when both import) or "yes"
    (both must import: the ImportError propagates)."""
    if mode == "no":
        return None
    try:
        import torch
        import torchvision
    except ImportError:
        if mode == "yes":
            raise
        return None
    return torch, torchvision
