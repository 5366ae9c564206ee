"""XLA flags that jaxvision's launchers add on top of the user's `XLA_FLAGS`, each with its reason.

XLA reads `XLA_FLAGS` once, when JAX first initialises a backend, so `apply()` runs at the start
of each command. A flag the user sets keeps the user's value. `xla_gpu_*` flags change nothing on
CPU or TPU.
"""

import os

GPU_FLAGS = {
    # Lets XLA's scheduler move collectives (FSDP's all-gathers and reduce-scatters, the data
    # parallel gradient all-reduce) so that they overlap compute. NVIDIA's JAX containers set it
    # by default; on one GPU there is nothing to overlap.
    "xla_gpu_enable_latency_hiding_scheduler": "true",
}


def with_defaults(xla_flags: str) -> str:
    """`xla_flags` plus every `GPU_FLAGS` entry that it does not set itself."""
    given = {f.lstrip("-").split("=", 1)[0] for f in xla_flags.split()}
    added = [f"--{name}={value}" for name, value in GPU_FLAGS.items() if name not in given]
    return " ".join([xla_flags.strip(), *added]).strip()


def apply() -> None:
    """Adds the defaults to this process's `XLA_FLAGS`; call before JAX touches a device."""
    os.environ["XLA_FLAGS"] = with_defaults(os.environ.get("XLA_FLAGS", ""))
