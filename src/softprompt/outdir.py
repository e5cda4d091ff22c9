"""A run's output folder (``--out``): checked before any work, and held by one run at a time.

:func:`check_out_dir` refuses, before a model is loaded, a folder that cannot be created or
written or whose disk is (nearly) full; :func:`out_lock` takes an exclusive ``fcntl.flock`` on
``OUT/.softprompt.lock`` for the run, so a second training into the same folder is refused
instead of interleaving its metrics and prompts with the first's. The kernel drops the lock when
its process dies (even by ``kill -9``), so a crashed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ConfigError

# what a run writes into its --out (anything else there is someone else's): train's files, KPT's
# expanded label words, and pretrain-prompt's record of its corpus (ppt.pretrain.INFO_FILE)
RUN_FILES = frozenset({"best", "last", "checkpoint", "checkpoint.old", "checkpoint.tmp", "metrics.jsonl", "results.json",
                       "label_words.txt", "ppt.json"})

LOCK_FILE = ".softprompt.lock"
MIN_FREE_BYTES = 64 * 2**20
"""Free space a run needs in its output folder to start (checkpoints of a prompt are small; a
full-tuning run needs more, which a full disk later reports with :func:`output_errors`)."""

_held: dict[Path, tuple[int, int]] = {}  # resolved folder -> (lock fd, depth): re-entrant per process
_created: set[Path] = set()  # folders check_out_dir made in this process: a failed command removes them again


def check_out_dir(out: str | Path, option: str = "--out", min_free: int = MIN_FREE_BYTES) -> Path:
    """Create ``out`` if needed and prove it writable with ``min_free`` bytes free.

    Raises :class:`ConfigError` naming ``option`` (the command's option for the folder).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out} is a file, not a folder: choose a folder for {option} (it is created if missing)")
    missing = [d for d in (out, *out.parents) if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        _created.update(d.resolve() for d in missing)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        try:
            os.write(fd, b"softprompt")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} {out} is not writable ({exc.strerror or exc}): fix its permissions or "
                          f"choose another {option}") from exc
    free = shutil.disk_usage(out).free
    if free < min_free:
        raise ConfigError(f"{option} {out} has {free / 2**20:.1f} MiB free, under the {min_free / 2**20:.0f} MiB a "
                          f"run needs: free some space or choose another {option} on another disk")
    return out


@contextlib.contextmanager
def out_lock(out: str | Path, enabled: bool = True, option: str = "--out") -> Iterator[None]:
    """Hold ``OUT/.softprompt.lock`` exclusively for the block; another holder is refused at once
    (:class:`ConfigError` naming its process). Re-entrant within one process (PPT pre-training
    locks the folder, then trains into it); ``enabled=False`` (ranks other than 0) does nothing."""
    if not enabled:
        yield
        return
    import fcntl

    key = Path(out).resolve()
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise ConfigError(f"{option} {out} is in use by another run ({holder}): wait for it to finish, "
                          f"or choose another {option}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[key] = (fd, 1)
    try:
        yield
    except BaseException:
        _remove_if_unused(key)  # a command that failed before writing anything leaves no folder behind
        raise
    finally:
        del _held[key]
        os.close(fd)  # releases the lock; the file stays (removing it would race with a new holder)


def _remove_if_unused(folder: Path) -> None:
    """Remove ``folder`` (and the parents made with it) if this process created it and it holds
    nothing but the lock file; called with the lock still held, so no other run is inside."""
    if folder not in _created or {p.name for p in folder.iterdir()} - {LOCK_FILE}:
        return
    with contextlib.suppress(OSError):
        (folder / LOCK_FILE).unlink()
        folder.rmdir()
        for parent in folder.parents:
            if parent not in _created or any(parent.iterdir()):
                break
            parent.rmdir()


@contextlib.contextmanager
def output_errors(out: str | Path, option: str = "--out") -> Iterator[None]:
    """Turn a full disk or a folder that became unwritable during a run into :class:`ConfigError`
    (a message, not a traceback) that says how to go on."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(f"the disk of {option} {out} is full ({exc}): free some space, then continue the "
                              "run with --resume") from exc
        if exc.errno in (errno.EACCES, errno.EROFS) and exc.filename and \
                Path(exc.filename).resolve().is_relative_to(Path(out).resolve()):
            raise ConfigError(f"{option} {out} became unwritable ({exc}): fix its permissions, then continue "
                              "with --resume") from exc
        raise
