"""jaxvision: image recognition with large models in JAX/Flax."""

__version__ = "0.1.0"
