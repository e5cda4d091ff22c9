"""Atomic writes of files and whole directories: a reader sees the old one or the new one,
never half of either, nor a mix of both."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Collection, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` atomically.

    The temporary file lives in the same directory, so ``os.replace`` is a rename on one file
    system. On error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # as open() would create it: mkstemp's 0600 hid outputs from other users
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    """The process's file mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------- whole directories
_TMP, _OLD = ".tmp-", ".old-"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, owned: Collection[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path`` whole.

    What is written inside is flushed to disk (``fsync``), then the two directories are swapped by
    one atomic ``renameat2(RENAME_EXCHANGE)`` where the system has it (Linux), else by two renames
    that :func:`clean_stale` undoes if a crash falls between them; the old content is then
    removed. A reader sees the old directory or the new one, never a mix (e.g. metadata from one
    step and tensors from another). Temporary directories a killed save left are removed first.

    ``owned``: the names a save of this kind writes; an existing ``path`` holding anything else
    is refused (:class:`~softprompt.errors.ConfigError`) rather than deleted with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    if owned is not None and path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in owned)
        if foreign:
            from .errors import ConfigError

            raise ConfigError(f"{path} holds other files ({', '.join(foreign[:5])}) that saving here would delete: "
                              "save into a new or empty directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{_TMP}", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # as mkdir would make it, not mkdtemp's 0700
    try:
        yield tmp
        _fsync_tree(tmp)
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
        elif not _exchange(tmp, path):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{_OLD}", dir=path.parent))
            os.replace(path, old)  # a crash here leaves only `old`: clean_stale puts it back
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():  # the failed save, or (after an exchange) the old content
            shutil.rmtree(tmp, ignore_errors=True)


def clean_stale(path: str | os.PathLike) -> None:
    """Remove what a killed :func:`atomic_dir` or :func:`atomic_path` left for ``path``.

    An old copy moved aside (``.NAME.old-*``) is put back if ``path`` is missing (the crash fell
    between the two renames), else deleted; half-written ``.NAME.tmp-*`` directories and, inside
    ``path``, ``.*.tmp`` files are deleted. Call it only while no other process saves ``path``
    (training holds the output folder's lock).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for old in sorted(path.parent.glob(f".{path.name}{_OLD}*")):
        if not (path.exists() or path.is_symlink()):
            os.replace(old, path)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in path.parent.glob(f".{path.name}{_TMP}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if path.is_dir() and not path.is_symlink():
        for tmp in path.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one atomic step (Linux ``renameat2``); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)
