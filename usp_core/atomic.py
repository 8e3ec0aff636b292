"""Atomic file writes: a crash or kill at any point leaves the previous file or the new one, never a partial one.

The data goes to a temporary file beside the target (so ``os.replace`` is a same-filesystem rename),
is flushed and fsynced, then replaces the target; the folder is fsynced so the rename persists.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "write_bytes_atomic"]

FILE_MODE = 0o644  # what open() would give under the usual umask (mkstemp alone gives 0600)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file and move it over ``path``; returns the path.

    The parent folder is created when missing; the temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return atomic_write(path, lambda handle: handle.write(data))


def _fsync_dir(folder: Path) -> None:
    """Persist the rename in ``folder`` (best effort; not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
