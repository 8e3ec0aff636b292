"""Temporary files of interrupted atomic writes: what a kill -9 leaves, and which of them are removed."""
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from usp_core.support.atomic import STALE_AFTER_S, remove_stale_temp_files

KILLED_WRITE = """
import os, signal, sys
from usp_core.support.atomic import atomic_write

def write_then_die(handle):
    handle.write(b"half of a checkpoint")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(sys.argv[1], write_then_die)
"""


def _age(path: Path, seconds: float) -> Path:
    """Set the modification time of ``path`` to ``seconds`` ago; returns the path."""
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_only_stale_temp_files_of_our_writer_are_removed(tmp_path: Path, caplog):
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(tmp_path / "last.pt")], cwd=tmp_path)
    assert killed.returncode == -9
    [left] = tmp_path.glob(".last.pt.*.tmp")  # the writer's own temporary file, as a kill leaves it
    old = STALE_AFTER_S + 5
    stale = [_age(left, old), _age(_touch(tmp_path / ".best.pt.k2_9zq0a.tmp"), old)]
    kept = [
        _touch(tmp_path / ".best.pt.abc123xy.tmp"),  # ours but fresh: a writer may still be at work
        _age(_touch(tmp_path / "last.pt"), old),
        _age(_touch(tmp_path / "notes.tmp"), old),
        _age(_touch(tmp_path / ".last.pt.tmp"), old),  # no random part
        _age(_touch(tmp_path / ".last.pt.abcdefghi.tmp"), old),  # 9 random characters
        _age(_touch(tmp_path / ".last.pt.abcdefgh.tmp.bak"), old),
        _age(_touch(tmp_path / "snapshots" / ".step_000005.pt.abcdefgh.tmp"), old),  # not recursive
    ]
    folder = tmp_path / ".dir.pt.abcdefgh.tmp"
    folder.mkdir()
    _age(folder, old)
    kept.append(folder)
    with caplog.at_level(logging.INFO, logger="usp_core.support.atomic"):
        removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)
    assert all(str(path) in caplog.text for path in stale)


def test_a_missing_folder_is_no_error(tmp_path: Path):
    assert remove_stale_temp_files(tmp_path / "absent") == []
