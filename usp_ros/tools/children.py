"""Child Python processes of a tool or a test: the front-end runner's nodes, the benchmarks', the tests' `spawn`.

Each child is ``python ARGS`` (``-m module ...`` or a script and its arguments) started in one scratch folder,
with its stdout and stderr in ``<folder>/<name>.log``. A child takes SIGINT as its stop signal even when this
process was started with SIGINT ignored (a background job), and gets SIGTERM when the thread that started it
ends (Linux PR_SET_PDEATHSIG: for the runner and the tests, the main thread, so in effect when this process
dies). ``stop()`` sends SIGINT to every child still running and SIGKILL to those still
running ``stop_timeout`` seconds later.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["STOP_TIMEOUT_S", "Children"]

STOP_TIMEOUT_S = 10.0  # a child gets this long to exit after SIGINT, then SIGKILL
_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None  # looked up here, not in the child


def _prepare_child() -> None:
    """In the child between fork and exec: SIGINT back to its default, SIGTERM on the parent's death.

    Python warns that a preexec_fn may deadlock when the parent runs threads (a lock another thread held at
    the fork stays locked in the child). This one imports nothing and takes no lock of ours; the runner
    still starts its children before rclpy starts threads.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """Named child processes in ``folder`` with environment ``env`` (default: this process's), unbuffered output.

    A context manager: leaving it stops the children.
    """

    def __init__(self, folder: Path, env: dict[str, str] | None = None, stop_timeout: float = STOP_TIMEOUT_S) -> None:
        self.folder = Path(folder)
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.stop_timeout = stop_timeout
        self.processes: dict[str, subprocess.Popen] = {}  # in start order

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start ``python *args`` as the child ``name`` (unique among this object's children); returns it."""
        if name in self.processes:
            raise ValueError(f"a child named {name!r} was started already")
        with open(self.log_path(name), "w") as log:
            self.processes[name] = subprocess.Popen([sys.executable, *args], cwd=self.folder, env=self.env,
                                                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=_prepare_child)
        return self.processes[name]

    def dead(self) -> str | None:
        """The name of a child that has exited, or None while all run."""
        return next((name for name, process in self.processes.items() if process.poll() is not None), None)

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last ``lines`` lines of child ``name``'s output."""
        return "\n".join(self.log_path(name).read_text(errors="replace").strip().splitlines()[-lines:])

    def death_report(self, name: str) -> str:
        """What to tell the user when child ``name`` has exited: its exit code and the end of its log."""
        return (f"{name} exited with code {self.processes[name].returncode}; last lines of its log:\n"
                f"{self.log_tail(name)}")

    def stop(self) -> None:
        """SIGINT to every running child; SIGKILL to those still running after ``stop_timeout`` s in all."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
