"""Orbax checkpoints of the training state: save every N steps, keep the last K, resume the latest.

A checkpoint holds two items: `state`, the train-state pytree, and `meta`, a small JSON record
(where the input pipeline stands, partial metric sums, ...), so that a resumed run continues
exactly. Orbax writes each step into a temporary directory and renames it when complete: a crash
or a `kill -9` mid-save leaves the previous checkpoint as the latest usable one.
"""

import os

import jax
import orbax.checkpoint as ocp

from jaxvision.errors import UserError


class Checkpointer:
    """A thin, typed face over `ocp.CheckpointManager` for one run's checkpoints."""

    def __init__(
        self, directory: str, *, save_every_steps: int, keep: int, async_save: bool = True
    ):
        # The interval is applied here rather than by Orbax, which also saves the first step
        # it sees (a useless checkpoint at step 1 of a long run).
        self.save_every_steps = max(int(save_every_steps), 1)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep), 1),
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # leftovers of a save that was killed
        )
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, abstract_state, step: int | None = None) -> tuple[object, dict]:
        """Restores `step` (default: the latest) into the structure, dtypes and shardings of
        `abstract_state` (a pytree of `jax.ShapeDtypeStruct` with `.sharding` set).

        Returns (state, meta).
        """
        step = self.latest_step() if step is None else step
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, dict(restored.meta or {})

    def save(self, step: int, state, meta: dict | None = None, *, force: bool = False) -> bool:
        """Saves when `step` is on the save interval (or `force`) and not saved yet; returns
        whether it saved. Asynchronous: the write finishes in the background."""
        if not force and step % self.save_every_steps:
            return False
        if step == self._manager.latest_step():  # already saved, perhaps still being written
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})
        )
        return self._manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def load_variables(path: str, step: int | None = None) -> tuple[dict, int]:
    """The model variables ({"params", "batch_stats"} as numpy) of another run's checkpoint, for
    fine-tuning: `path` is its workdir or its checkpoints/ directory. Returns (variables, step).
    """
    directory = (
        os.path.join(path, "checkpoints")
        if os.path.isdir(os.path.join(path, "checkpoints"))
        else path
    )
    manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={"state": ocp.StandardCheckpointHandler()},
    )
    step = manager.latest_step() if step is None else step
    if step is None:
        raise UserError(f"no checkpoint in {directory}: init_from needs a trained workdir")
    # Whole arrays on this process's first device, whatever devices wrote them (a run on 8
    # devices or several hosts is read back on 1).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        manager.item_metadata(step)["state"],
    )
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    manager.close()
    state = restored.state
    get = state.get if isinstance(state, dict) else lambda k, d=None: getattr(state, k, d)
    variables = {"params": jax.device_get(get("params"))}
    if get("batch_stats"):
        variables["batch_stats"] = jax.device_get(get("batch_stats"))
    return variables, int(step)
