"""Atomic file writes: a crash or kill at any point leaves the previous file or the new one, never a partial one.

The data goes to a temporary file beside the target (so ``os.replace`` is a same-filesystem rename),
is flushed and fsynced, then replaces the target; the folder is fsynced so the rename persists.

A process killed mid-write (SIGKILL, power loss) leaves its temporary file ``.<name>.<8 random
characters>.tmp`` behind; ``remove_stale_temp_files`` removes those of one folder. It takes only
files older than ``STALE_AFTER_S``: a writer still running in another process keeps its file's
modification time fresh (a checkpoint is written in well under a second), so its file is left alone;
were a writer stalled that long, its ``os.replace`` would fail and the previous file would stay whole.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

__all__ = ["atomic_path", "atomic_write", "write_bytes_atomic", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

FILE_MODE = 0o644  # what open() would give under the usual umask (mkstemp alone gives 0600)
TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # mkstemp(prefix=".<name>.", suffix=TEMP_SUFFIX)'s names
STALE_AFTER_S = 60.0  # a temporary file unmodified this long belongs to no running writer


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for writers that take a path (exporters); when the block ends without an
    exception it is synced and moved over ``path``, otherwise removed, so ``path`` keeps its previous content.

    The parent folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    staged = Path(tmp_name)
    try:
        yield staged
        os.chmod(staged, FILE_MODE)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file and move it over ``path``; returns the path.

    The parent folder is created when missing; the temporary file is removed if ``write`` fails.
    """
    with atomic_path(path) as staged, open(staged, "wb") as handle:
        write(handle)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return atomic_write(path, lambda handle: handle.write(data))


def remove_stale_temp_files(folder: str | Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` (not in its subfolders).

    Only regular files named like ours and unmodified for ``stale_after_s`` seconds go; each removal
    is logged. Returns the removed paths; a missing folder or a file that cannot be removed is skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        if not TEMP_NAME.fullmatch(path.name):
            continue
        try:
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < stale_after_s:
                continue
            path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            continue
        logger.info("removed %s (%d bytes), left by an interrupted write", path, info.st_size)
        removed.append(path)
    return removed


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
