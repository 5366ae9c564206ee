"""The device mesh and how arrays are laid out over it.

Every jitted step in jaxvision takes explicit shardings built here: batches are split over the
mesh's `data` axis, everything else is replicated (larger strategies, such as FSDP, map parameter
axes to mesh axes in the same place).
"""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.errors import UserError

DATA_AXIS = "data"


def make_mesh(
    axes: Sequence[tuple[str, int]] = ((DATA_AXIS, -1),), devices: Sequence | None = None
) -> Mesh:
    """Builds a mesh from `(name, size)` pairs; one size may be -1 for "the rest of the devices".

    Example: `make_mesh([("data", -1)])` puts every device on the data axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    names = [name for name, _ in axes]
    sizes = [int(size) for _, size in axes]
    if sizes.count(-1) > 1:
        raise UserError(f"mesh {list(axes)} has more than one axis of size -1: give all but one")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise UserError(
                f"mesh {list(axes)} does not fit {len(devices)} devices: the fixed axis sizes "
                f"must divide the device count"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise UserError(
            f"mesh {list(axes)} needs {int(np.prod(sizes))} devices but {len(devices)} are "
            f"present: make the axis sizes multiply to the device count or use -1 for one axis"
        )
    return Mesh(np.asarray(devices).reshape(sizes), names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis, the rest replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    """Raises UserError unless the global batch splits evenly over the data axis and hosts."""
    data_size = mesh.shape[DATA_AXIS]
    if global_batch_size % data_size:
        raise UserError(
            f"batch_size={global_batch_size} is not divisible by the {data_size} devices on the "
            f"'{DATA_AXIS}' axis: set --config.batch_size to a multiple of {data_size}"
        )
    if global_batch_size % jax.process_count():
        raise UserError(
            f"batch_size={global_batch_size} is not divisible by the {jax.process_count()} "
            f"processes: set --config.batch_size to a multiple of {jax.process_count()}"
        )
