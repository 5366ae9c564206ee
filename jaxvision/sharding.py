"""The device mesh and how arrays are laid out over it.

Every jitted step takes explicit shardings built here. The mesh has named axes, by convention:

  data   pure data parallelism: the batch is split, parameters are replicated;
  fsdp   the batch is split AND each large parameter (with its optimizer state) is split, so
         memory per device falls with the axis size (ZeRO-3 / fully-sharded data parallel);
  model  tensor parallelism: kernels annotated with logical axes ("mlp", "heads") are split
         Megatron-style, by the rules in LOGICAL_RULES.

A strategy string picks what parameters do: "replicated", "fsdp", "tensor" or "fsdp+tensor".
Batches are always split over every batch axis in the mesh (data x fsdp).
"""

from collections.abc import Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvision.errors import UserError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
MODEL_AXIS = "model"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
STRATEGIES = ("replicated", "fsdp", "tensor", "fsdp+tensor")

# Logical axis name (from the models' kernel annotations) -> mesh axis, for tensor parallelism:
# split the MLP hidden units and the attention heads; the residual width stays whole.
LOGICAL_RULES = (("mlp", MODEL_AXIS), ("heads", MODEL_AXIS), ("embed", None), ("kv", None))

# Parameters smaller than this (elements) stay replicated under FSDP: sharding a bias or a norm
# scale saves nothing and adds a collective.
FSDP_MIN_SIZE = 2**14


def make_mesh(
    axes: Sequence[tuple[str, int]] = ((DATA_AXIS, -1),), devices: Sequence | None = None
) -> Mesh:
    """Builds a mesh from `(name, size)` pairs; one size may be -1 for "the rest of the devices".

    Example: `make_mesh([("data", -1)])` puts every device on the data axis;
    `make_mesh([("data", 2), ("fsdp", -1), ("model", 2)])` uses 2-way data, 2-way tensor and
    FSDP over what is left. Devices are laid out with `jax.make_mesh` when they are the
    default ones, so the fastest links (within a host, an ICI ring) serve the innermost axes.
    """
    default_devices = devices is None
    devices = list(jax.devices() if devices is None else devices)
    names = [name for name, _ in axes]
    unknown = sorted(set(names) - {DATA_AXIS, FSDP_AXIS, MODEL_AXIS})
    if unknown or len(set(names)) != len(names):
        what = f"unknown axis {', '.join(unknown)}" if unknown else "an axis named twice"
        raise UserError(
            f"mesh {list(axes)} has {what}: name each axis once, from {DATA_AXIS}, {FSDP_AXIS} "
            f"and {MODEL_AXIS} (the batch splits over {DATA_AXIS} x {FSDP_AXIS})"
        )
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
    if default_devices:
        # Auto axes: the compiler propagates shardings from the jit boundaries (the default
        # of jax.make_mesh is Explicit, sharding-in-types).
        auto = (jax.sharding.AxisType.Auto,) * len(sizes)
        return jax.make_mesh(tuple(sizes), tuple(names), devices=devices, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(sizes), names)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the batch is split over, outermost first."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_split(mesh: Mesh) -> int:
    """How many ways the global batch is split (the product of the batch axes' sizes)."""
    return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    """Raises UserError unless the global batch splits evenly over the batch axes and hosts."""
    split = batch_split(mesh)
    if global_batch_size % split:
        raise UserError(
            f"batch_size={global_batch_size} is not divisible by the {split} devices on the "
            f"batch axes {'x'.join(batch_axes(mesh))}: set --config.batch_size to a multiple "
            f"of {split}"
        )
    if global_batch_size % jax.process_count():
        raise UserError(
            f"batch_size={global_batch_size} is not divisible by the {jax.process_count()} "
            f"processes: set --config.batch_size to a multiple of {jax.process_count()}"
        )


def check_strategy(strategy: str, mesh: Mesh) -> tuple[bool, bool]:
    """Validates `strategy` against the mesh; returns (fsdp, tensor)."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown sharding '{strategy}': choose one of {', '.join(STRATEGIES)}")
    fsdp, tensor = "fsdp" in strategy, "tensor" in strategy
    for wanted, axis in ((fsdp, FSDP_AXIS), (tensor, MODEL_AXIS)):
        if wanted and axis not in mesh.axis_names:
            raise UserError(
                f"sharding '{strategy}' needs a '{axis}' mesh axis, the mesh has "
                f"{dict(mesh.shape)}: add ('{axis}', N) to --config.mesh"
            )
    return fsdp, tensor


def _fsdp_spec(shape: tuple[int, ...], spec: list, fsdp_size: int, min_size: int) -> list:
    """Puts the fsdp axis on the largest free dimension that it divides."""
    if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return spec
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if spec[dim] is None and shape[dim] % fsdp_size == 0:
            spec[dim] = FSDP_AXIS
            return spec
    return spec


def param_specs(
    params,
    mesh: Mesh,
    strategy: str = "replicated",
    *,
    logical_specs=None,
    rules=LOGICAL_RULES,
    fsdp_min_size: int = FSDP_MIN_SIZE,
):
    """PartitionSpecs for `params` (arrays or ShapeDtypeStructs) under `strategy`.

    logical_specs: the models' logical annotations (`nn.get_partition_spec` of a boxed init),
    used by "tensor"; parameters without one are not tensor-split.
    """
    fsdp, tensor = check_strategy(strategy, mesh)
    fsdp_size = mesh.shape.get(FSDP_AXIS, 1)
    flat_logical = {}
    if tensor and logical_specs is not None:
        flat_logical = dict(
            jax.tree_util.tree_flatten_with_path(logical_specs, is_leaf=lambda x: isinstance(x, P))[
                0
            ]
        )

    def spec_for(path, leaf):
        spec = [None] * len(leaf.shape)
        logical = flat_logical.get(path)
        if logical is not None and len(logical) == len(leaf.shape):
            mapped = nn.logical_to_mesh_axes(logical, rules)
            spec = [a if a in mesh.axis_names else None for a in mapped]
            for dim, axis in enumerate(spec):
                if axis is not None and leaf.shape[dim] % mesh.shape[axis]:
                    spec[dim] = None  # e.g. 3 heads on a 2-way model axis: keep it whole
        if fsdp:
            spec = _fsdp_spec(tuple(leaf.shape), spec, fsdp_size, fsdp_min_size)
        return P(*spec)

    return jax.tree_util.tree_map_with_path(spec_for, params)


def _dict_keys(path) -> tuple[str, ...]:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def _flat_by_keys(tree, is_leaf=None) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return {_dict_keys(path): leaf for path, leaf in leaves}


def state_shardings(abstract_state, mesh: Mesh, specs: dict):
    """NamedShardings for a whole train state, by rules over paths: each model's parameters
    (and their EMA) by its PartitionSpecs, every optimizer-state leaf like the parameter it
    belongs to (same path and shape), everything else (steps, keys, BatchNorm statistics)
    replicated.

    specs: {model name: the PartitionSpecs of its parameters} (`param_specs`), for every model in
    `abstract_state.models`: a frozen teacher is laid out like a trained student.
    """
    rules = {
        name: _flat_by_keys(model_specs, is_leaf=lambda x: isinstance(x, P))
        for name, model_specs in specs.items()
    }
    shapes = {
        name: {k: tuple(v.shape) for k, v in _flat_by_keys(model.params).items()}
        for name, model in abstract_state.models.items()
    }

    def leaf_sharding(path, leaf):
        # path: .models[name].<field>[...]: the field says what the dict keys after it are.
        if path[0].name != "models":  # the run's step
            return NamedSharding(mesh, P())
        name = path[1].key
        field = path[2].name
        keys = _dict_keys(path[3:])
        by_path = rules[name]
        if field == "variables" and keys[:1] == ("params",):
            return NamedSharding(mesh, by_path[keys[1:]])
        if field == "ema_params":
            return NamedSharding(mesh, by_path[keys])
        if field == "opt_state":
            # The parameter's path is a suffix of its state's: optax wrappers add their own
            # keys in front (multi_transform's "trainable", ...).
            for start in range(len(keys)):
                suffix = keys[start:]
                if suffix in by_path and tuple(leaf.shape) == shapes[name][suffix]:
                    return NamedSharding(mesh, by_path[suffix])
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)


def abstract_like(tree, shardings):
    """`jax.ShapeDtypeStruct`s with the shapes and dtypes of `tree` (arrays or abstract values)
    and the given shardings (a tree of the same structure): what `restore` and `lower` take."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
