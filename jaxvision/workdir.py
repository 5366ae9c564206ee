"""A run's working directory: where it may be, one run at a time, and its stored config.

A workdir holds `config.json`, `metrics.jsonl`, `checkpoints/` and the reports of one run.
`open_workdir` checks that the path can be written and takes a lock held for the life of the
process: a second run on a busy workdir stops at once with the first one's PID, while the lock
of a run that was killed goes with its process (the operating system drops it), so a rerun is
never blocked by a stale lock.
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time

import jax

from jaxvision.checkpoint import Checkpointer, is_disk_full
from jaxvision.errors import UserError

LOCK_NAME = ".lock"
# Config fields a resumed run must share with the run that wrote the checkpoints: the state's
# structure (model and its options, classes) and the stream of batches (data, batch, seed).
RESUME_FIELDS = ("model", "model_kwargs", "dataset", "batch_size", "seed", "image_size")


def check_local_path(path: str) -> None:
    """Refuses URLs (gs://, s3://, ...): every file a run writes goes through the local
    filesystem, where a path like gs://bucket/run would silently become a local folder."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise UserError(
            f"--workdir={path} is a URL, but runs write to a local or mounted filesystem: "
            "mount the bucket (e.g. gcsfuse, on every host) and pass its path, or use a local "
            "or NFS directory"
        )


class WorkdirLock:
    """An exclusive lock on `<workdir>/.lock`, released when the process ends, however it ends."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self._file = None

    def acquire(self) -> None:
        try:  # held open for the life of the run; opening it also proves the workdir writable
            file = open(self.path, "a+")  # noqa: SIM115
        except OSError as e:
            raise UserError(
                f"cannot write to workdir {os.path.dirname(self.path)} "
                f"({os.strerror(e.errno) if e.errno else e}): use a writable directory"
            ) from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                file.close()
                raise
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise UserError(
                f"workdir {os.path.dirname(self.path)} is in use by {holder}: wait for that run "
                "to finish (or stop it), or use another --workdir"
            ) from None
        file.seek(0)
        file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        file.write(f"process {os.getpid()} on {socket.gethostname()} (started {started})\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def open_workdir(workdir: str) -> WorkdirLock | None:
    """Creates `workdir` if needed, checks it can be written and locks it for this run (process
    0 of a multi-host run; the others share its workdir). Returns the lock to release."""
    check_local_path(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} is a file: pass a directory (it is created if new)")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create workdir {workdir} ({os.strerror(e.errno) if e.errno else e}): "
            "use a writable directory"
        ) from None
    if jax.process_index() != 0:
        return None
    lock = WorkdirLock(workdir)
    lock.acquire()
    return lock


def stored_config(workdir: str) -> dict | None:
    """The config a run wrote to `<workdir>/config.json`, or None."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # damaged: the checkpoint's own record still guards the resume


def write_config(workdir: str, config) -> None:
    """`<workdir>/config.json`, replaced atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "config.json")
    with open(path + ".tmp", "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    os.replace(path + ".tmp", path)


def resume_record(config) -> dict:
    """What a checkpoint records of its run, for `check_resume`: JSON-plain values."""
    record = json.loads(config.to_json_best_effort())
    return {k: record.get(k) for k in RESUME_FIELDS}


def check_resume(saved: dict, config, directory: str) -> None:
    """A resumed run must build the same state and read the same batches as the run that wrote
    the checkpoints in `directory`; `saved` is that run's `resume_record`."""
    current = resume_record(config)
    changed = [k for k in current if k in saved and saved[k] != current[k]]
    if changed:
        was = ", ".join(f"{k}={saved[k]}" for k in changed)
        now = ", ".join(f"{k}={current[k]}" for k in changed)
        raise UserError(
            f"the checkpoints in {directory} were written with {was}, this run asks for {now}: "
            "rerun with the original settings or use a new --workdir"
        )


def out_of_resources(error: Exception, workdir: str) -> UserError | None:
    """`error` as one line when the run ran out of disk (naming the checkpoint that survives) or
    of device memory (saying what to change); None for any other error."""
    if is_disk_full(error):
        directory = os.path.join(workdir, "checkpoints")
        latest = None
        if os.path.isdir(directory):
            latest = Checkpointer(directory, read_only=True).latest_step()
        kept = f"step {latest} in {directory}" if latest is not None else "none"
        return UserError(
            f"the disk under {workdir} is full ({error.__class__.__name__}); the latest complete "
            f"checkpoint is {kept}: free some space and rerun the same command to continue"
        )
    if "RESOURCE_EXHAUSTED" in str(error).split(":", 1)[0]:
        return UserError(
            f"out of memory ({' '.join(str(error).split())[:160]}): lower batch_size, or use "
            "microbatches, remat, dtype=bfloat16 or FSDP (docs/performance.md, Memory)"
        )
    return None
