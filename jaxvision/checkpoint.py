"""Orbax checkpoints of the training state: save every N steps, keep the last K, resume the latest.

A checkpoint holds two items: `state`, the train-state pytree, and `meta`, a small JSON record
(where the input pipeline stands, partial metric sums, ...), so that a resumed run continues
exactly. Orbax writes each step into a temporary directory and renames it when complete: a crash
or a `kill -9` mid-save leaves the previous checkpoint as the latest usable one. A checkpoint
that was damaged afterwards (a truncated file, an empty `_METADATA`) is skipped for the newest
one that reads, and moved aside as `<step>.damaged`, never deleted. So is one whose bytes were
changed without changing its size: `meta` carries a digest of every array of the state
(`jaxvision.digests`), checked when the state is read back.
"""

import contextlib
import copy
import errno
import gc
import json
import logging
import os
import sys

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxvision import digests
from jaxvision.errors import UserError

# The key of `meta` under which a save records its state's digests (taken out on restore).
DIGESTS_KEY = "state_digests"


def _write_replicated_arrays_whole_on_cpu() -> None:
    """In a one-process CPU run, Orbax writes each replicated array whole from its first
    replica.

    Orbax's default there ("replica-parallel" saving) has every replica write a slice of the
    array, which slices each array on each device: one compiled program per device and shape
    (about 190 for a ResNet-18 on 8 devices, ~25 s on a cold compilation cache, paid at the
    first save of every process). In one process on CPU the devices share the host's memory, so
    the slices buy nothing. GPUs, TPUs and multi-process runs keep Orbax's own choice."""
    if jax.default_backend() != "cpu" or jax.process_count() > 1:
        return
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(handler, "_use_replica_parallel", False):
        handler = copy.copy(handler)
        handler._use_replica_parallel = False
        absl_logger = logging.getLogger("absl")  # Orbax warns of every handler it replaces
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
        finally:
            absl_logger.setLevel(level)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()).split(" See full TensorStore details")[0]
    return (text[:120] + "...") if len(text) > 120 else text or type(error).__name__


def _some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more arrays" if len(names) > limit else "")


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or any error it was raised from, says the disk is full."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_abandoned_read(unraisable) -> bool:
    text = str(unraisable.exc_value)
    return "Event loop is closed" in text or "error while reading array index" in text


def _drop_abandoned_io_errors() -> None:
    """When a save or restore fails (a full disk, a damaged file), Orbax's other reads and
    writes of that checkpoint fail as they finish or are collected, each printing a TensorStore
    spec or an event-loop error to stderr ("Exception ignored in ..."), some after the call
    has returned. Those two messages are dropped; every other one reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "jaxvision_filter", False):
        return

    def hook(unraisable):
        if not _is_abandoned_read(unraisable):
            previous(unraisable)

    hook.jaxvision_filter = True
    sys.unraisablehook = hook


_drop_abandoned_io_errors()


@contextlib.contextmanager
def _collect_on_failure():
    """Collects a failed restore's abandoned reads right away (see above)."""
    try:
        yield
    except Exception:
        gc.collect()
        raise


class _OrbaxNoise(logging.Filter):
    """Drops two kinds of Orbax log records: a full disk, which it logs with a traceback from
    each save thread while the run reports it once, as one line (`is_disk_full`); and its
    warnings that a manager is read-only, which is what readers here ask for."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "read_only=True" in message or "directory is read only" in message:
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not ("No space left on device" in message or (error and is_disk_full(error)))


class _AbandonedTasks(logging.Filter):
    """asyncio's "Task exception was never retrieved" for the same abandoned reads and writes
    (see `_drop_abandoned_io_errors`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            "Task exception was never retrieved" in message
            and (
                "error while reading array index" in message or "No space left on device" in message
            )
        )


logging.getLogger("absl").addFilter(_OrbaxNoise())
logging.getLogger("asyncio").addFilter(_AbandonedTasks())


class CheckpointMismatch(UserError):
    """The checkpoint holds another state than the one this run builds."""


class CheckpointDamaged(UserError):
    """The checkpoint reads, but some of its arrays differ from what was written."""

    def __init__(self, step: int, directory: str, arrays: list[str]):
        self.reason = (
            f"{arrays[0]} differs from the digest written with it"
            if len(arrays) == 1
            else f"{_some(arrays)} differ from the digests written with them"
        )
        super().__init__(
            f"the checkpoint at step {step} in {directory} is damaged ({self.reason}): "
            "restore it from a backup, or use another step"
        )


def _structure_difference(saved_tree, abstract_state) -> str | None:
    """First difference between a checkpoint's array metadata and `abstract_state`, or None."""
    name = digests.leaf_name
    saved = {
        name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(saved_tree)
        if hasattr(leaf, "shape")
    }
    wanted = {
        name(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
    }
    for key in sorted(set(saved) | set(wanted)):
        if key not in saved:
            return f"it has no {key}"
        if key not in wanted:
            return f"it has {key}, which this run's state lacks"
        if saved[key] != wanted[key]:
            return f"{key} is {saved[key]} there, {wanted[key]} here"
    return None


class Checkpointer:
    """A thin, typed face over `ocp.CheckpointManager` for one run's checkpoints.

    save_every_steps: 0 saves only when asked to (`force`: the final step, a preemption).
    read_only: for readers (evaluation, export, serving) of a workdir that may still be
    training: nothing in the directory is created, cleaned up or moved.
    """

    def __init__(
        self,
        directory: str,
        *,
        save_every_steps: int = 0,
        keep: int = 1,
        async_save: bool = True,
        read_only: bool = False,
    ):
        # The interval is applied here rather than by Orbax, which also saves the first step
        # it sees (a useless checkpoint at step 1 of a long run).
        self.save_every_steps = max(int(save_every_steps), 0)
        self.read_only = read_only
        self.directory = os.path.abspath(directory)
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            _write_replicated_arrays_whole_on_cpu()
            options = ocp.CheckpointManagerOptions(
                max_to_keep=max(int(keep), 1),
                enable_async_checkpointing=async_save,
                create=True,
                cleanup_tmp_directories=True,  # leftovers of a save that was killed
            )
        self._options = options
        self._manager = self._open()
        self._closed = False

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=self._options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def item_metadata(self, step: int):
        """The saved state's tree of array metadata (shapes, dtypes) at `step`."""
        return self._manager.item_metadata(step)["state"]

    def newest_item_metadata(self):
        """The saved state's array metadata of the newest checkpoint whose metadata reads (a
        damaged newer one is left for `restore_newest_readable` to skip); None if none does."""
        for step in reversed(self.all_steps()):
            try:
                return self.item_metadata(step)
            except Exception:  # Orbax, TensorStore and JSON raise many types here
                continue
        return None

    def on_interval(self, step: int) -> bool:
        return self.save_every_steps > 0 and step % self.save_every_steps == 0

    def restore(self, abstract_state, step: int | None = None) -> tuple[object, dict]:
        """Restores `step` (default: the latest) into the structure, dtypes and shardings of
        `abstract_state` (a pytree of `jax.ShapeDtypeStruct` with `.sharding` set).

        Returns (state, meta). Raises CheckpointMismatch (a UserError) when the checkpoint holds
        another structure, CheckpointDamaged (one too) when an array differs from the digest
        written with it, and the reader's error when it cannot be read.
        """
        step = self.latest_step() if step is None else step
        try:
            saved = self.item_metadata(step)
        except Exception:  # unreadable metadata: the restore below says what is wrong
            saved = None
        if saved is not None:
            difference = _structure_difference(saved, abstract_state)
            if difference is not None:
                raise CheckpointMismatch(
                    f"the checkpoint at step {step} in {self.directory} holds another state "
                    f"({difference}): it was written by another model or model options; rerun "
                    "with the original config or use a new --workdir"
                )
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        meta = dict(restored.meta or {})
        recorded = meta.pop(DIGESTS_KEY, None)  # None: written before checkpoints had digests
        if recorded is not None:
            damaged = digests.mismatches(restored.state, recorded)
            if damaged:
                raise CheckpointDamaged(step, self.directory, damaged)
        return restored.state, meta

    def restore_newest_readable(self, abstract_state) -> tuple[object, dict, list[str]]:
        """Restores the newest checkpoint that reads. Damaged newer ones are skipped and, unless
        read-only, moved aside to `<step>.damaged` (a later save may reuse their step).

        Returns (state, meta, one line per skipped checkpoint).
        """
        skipped = []
        for step in reversed(self.all_steps()):
            try:
                with _collect_on_failure():
                    state, meta = self.restore(abstract_state, step)
            except CheckpointMismatch:
                raise
            except Exception as e:  # Orbax, TensorStore and JSON raise many types here
                reason = e.reason if isinstance(e, CheckpointDamaged) else _reason(e)
                skipped.append(f"step {step} ({reason})")
                self._set_aside(step)
                continue
            return state, meta, skipped
        raise UserError(
            f"no checkpoint in {self.directory} can be read (skipped {'; '.join(skipped)}): "
            "move the checkpoints/ folder away to start over, or restore it from a backup"
        )

    def _set_aside(self, step: int) -> None:
        if self.read_only:
            return
        if jax.process_index() == 0:
            source = os.path.join(self.directory, str(step))
            target = f"{source}.damaged"
            suffix = 1
            while os.path.exists(target):
                suffix += 1
                target = f"{source}.damaged{suffix}"
            os.rename(source, target)
        if jax.process_count() > 1:  # every process lists the steps again after the rename
            multihost_utils.sync_global_devices(f"jaxvision set aside checkpoint {step}")
        self._manager.close()
        self._manager = self._open()

    def save(self, step: int, state, meta: dict | None = None, *, force: bool = False) -> bool:
        """Saves when `step` is on the save interval (or `force`) and not saved yet; returns
        whether it saved. Asynchronous: the write finishes in the background."""
        if not force and not self.on_interval(step):
            return False
        if step == self._manager.latest_step():  # already saved, perhaps still being written
            return False
        # Digested on the devices, before Orbax copies the arrays out: every process joins in.
        meta = {**(meta or {}), DIGESTS_KEY: digests.state_digests(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self._manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for a save in flight to complete (whatever ended the run), then closes; a
        second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._manager.wait_until_finished()
        finally:
            self._manager.close()


def _unreadable(step: int, directory: str, error: Exception) -> UserError:
    return UserError(
        f"the checkpoint at step {step} in {directory} cannot be read ({_reason(error)}): "
        "restore it from a backup, or use another step"
    )


def load_model(path: str, step: int | None = None, model: str | None = None):
    """One model of another run's checkpoint, as numpy, for inference, fine-tuning, a teacher or
    a soup: {"variables": {"params", "batch_stats", ...}, "ema_params": ... or None}.

    path: the run's workdir (or its checkpoints/ directory). step: default the newest that
    reads. model: the model's name in a run of several (default: the one the run trained, from
    `<workdir>/model.json`). Returns (model, step, one line per skipped unreadable checkpoint).
    """
    if os.path.isdir(os.path.join(path, "checkpoints")):
        workdir, directory = path, os.path.join(path, "checkpoints")
    else:
        workdir, directory = os.path.dirname(os.path.abspath(path)), path
    # Read-only: the workdir may belong to a run that is still training.
    checkpointer = Checkpointer(directory, read_only=True)
    saved = checkpointer.all_steps()
    if not saved:
        raise UserError(f"no checkpoint in {directory}: point to a trained workdir")
    if step is not None and step not in saved:
        raise UserError(
            f"no checkpoint for step {step} in {directory}: saved steps are "
            f"{', '.join(map(str, saved))}"
        )
    # Whole arrays on this process's first device, whatever devices wrote them (a run on 8
    # devices or several hosts is read back on 1).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    try:
        saved_tree = (
            checkpointer.newest_item_metadata()
            if step is None
            else checkpointer.item_metadata(step)
        )
    except Exception as e:  # Orbax, TensorStore and JSON raise many types here
        raise _unreadable(step, directory, e) from None
    if saved_tree is None:
        raise UserError(
            f"no checkpoint in {directory} can be read: point to a trained workdir, or restore "
            "its checkpoints from a backup"
        )
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), saved_tree
    )
    try:
        if step is None:
            state, _, skipped = checkpointer.restore_newest_readable(abstract)
            step = int(state["step"]) if "step" in state else saved[-1]
        else:
            with _collect_on_failure():
                (state, _), skipped = checkpointer.restore(abstract, step), []
    except UserError:
        raise
    except Exception as e:  # Orbax, TensorStore and JSON raise many types here
        raise _unreadable(step, directory, e) from None
    finally:
        checkpointer.close()
    if skipped and jax.process_index() == 0:  # a reader must not pass for the newest step
        for line in skipped:
            print(
                f"skipped a damaged checkpoint of {path}, {line}: using step {step}",
                file=sys.stderr,
                flush=True,
            )
    if "models" not in state:  # written before runs held named models
        variables = {"params": state["params"]}
        if state.get("batch_stats"):
            variables["batch_stats"] = state["batch_stats"]
        found = {"variables": variables, "ema_params": state.get("ema_params")}
        return jax.device_get(found), int(step), skipped
    if model is None:
        record = os.path.join(workdir, "model.json")
        if os.path.isfile(record):
            with open(record) as f:
                model = json.load(f).get("model_key")
        model = model or next(iter(state["models"]))
    if model not in state["models"]:
        raise UserError(
            f"{path} has no model {model!r}: it holds {', '.join(sorted(state['models']))}"
        )
    found = state["models"][model]
    found = {"variables": dict(found["variables"]), "ema_params": found.get("ema_params")}
    return jax.device_get(found), int(step), skipped


def load_variables(path: str, step: int | None = None, model: str | None = None):
    """The variables ({"params", "batch_stats", ...} as numpy) of one model of another run's
    checkpoint (as `load_model`). Returns (variables, step)."""
    found, step, _ = load_model(path, step, model)
    return found["variables"], step
