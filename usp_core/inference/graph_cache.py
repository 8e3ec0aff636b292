"""On-disk cache of exported network graphs, keyed by everything that changes the graph, verified on every read.

An entry is a folder ``<root>/<digest>/`` holding the graph's files and ``manifest.json``. The digest
is the SHA-256 of a description of the graph: the runtime and its version, torch's version, the
model's class, the SHA-256 of the source files that make the graph (the module defining the model,
usp_core/inference/export.py and the runner's module), the model's config, the SHA-256 of its weights, the
input shapes and the precision, and ``GRAPH_FORMAT``. When a source file cannot be read, nothing is
cached (a stale graph could not be told from a fresh one). The manifest repeats the description and
lists the SHA-256 and size of each file. Every file is written atomically, the manifest last; a read
loads the files into memory and hands them out only when the manifest matches the description and
every file matches its hash, so a truncated, corrupt or foreign file is rebuilt, never trusted.

Bound: at most ``MAX_ENTRIES`` entries are kept. Storing an entry removes the least recently used
ones beyond that (last use: the manifest's modification time, refreshed at every hit), so graphs of
old weights, runtime versions or graph formats do not pile up. A process reading an entry that
another one removes meanwhile finds it unreadable and rebuilds it.

Root: the ``cache_dir`` argument, else ``$USP_ROS_CACHE_DIR``, else ``$XDG_CACHE_HOME/usp_ros``
(``~/.cache/usp_ros``), plus ``graphs/``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from usp_core.inference import export
from usp_core.models import layers  # the backbones and descriptor sampling every network is built from
from usp_core.support.atomic import remove_stale_temp_files, write_bytes_atomic
from usp_core.support.errors import first_line

__all__ = ["GRAPH_FORMAT", "MAX_ENTRIES", "GraphCache", "default_cache_root", "describe_graph", "source_digest",
           "weights_digest"]

logger = logging.getLogger(__name__)

GRAPH_FORMAT = 1  # bump when the graphs change for a reason the source digests do not see
MANIFEST = "manifest.json"
MAX_ENTRIES = 16  # entries kept on disk; storing one removes the least recently used beyond this


def default_cache_root() -> Path:
    """$USP_ROS_CACHE_DIR, else $XDG_CACHE_HOME/usp_ros, else ~/.cache/usp_ros."""
    if os.environ.get("USP_ROS_CACHE_DIR"):
        return Path(os.environ["USP_ROS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "usp_ros"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's state dict: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()


def describe_graph(model: nn.Module, runtime: str, runtime_version: str, inputs: str, precision: str,
                   runner: type) -> dict | None:
    """What the exported graph of ``model`` depends on, as a JSON-able dict (see the module docstring).

    ``runner``: the class that exports and runs the graph (its module's source is part of the key).
    None, with a warning, when a source file cannot be read: such a graph is not cached.
    """
    sources = {"model": type(model), "layers": layers, "export": export, "runner": runner}
    digests = {name: source_digest(owner) for name, owner in sources.items()}
    unreadable = [getattr(sources[name], "__name__", name) for name, digest in digests.items() if digest is None]
    if unreadable:
        logger.warning("cannot read the source of %s; the %s graph is not cached", ", ".join(unreadable), runtime)
        return None
    config = getattr(model, "config", None)
    return {
        "graph_format": GRAPH_FORMAT,
        "runtime": f"{runtime} {runtime_version}",
        "torch": torch.__version__,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "sources": digests,
        "model_config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config),
        "weights": weights_digest(model),
        "inputs": inputs,
        "precision": precision,
    }


def source_digest(owner: object) -> str | None:
    """SHA-256 of the source file that defines ``owner`` (a class or module), or None when it cannot be read."""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(owner)).read_bytes()).hexdigest()
    except (TypeError, OSError):
        return None


class GraphCache:
    """Exported graphs on disk: ``get_or_build(description, names, build)`` returns verified file contents."""

    def __init__(self, root: str | Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.root = (Path(root) if root is not None else default_cache_root()) / "graphs"
        self.max_entries = max_entries

    def folder(self, description: dict) -> Path:
        """The entry folder of a description: root/<SHA-256 of its canonical JSON>."""
        return self.root / hashlib.sha256(_canonical(description)).hexdigest()

    def get_or_build(self, description: dict | None, names: tuple[str, ...],
                     build: Callable[[], dict[str, bytes]]) -> dict[str, bytes]:
        """Files {name: bytes} (exactly ``names``) from a verified entry, else from ``build()``.

        Built files are stored; a write failure is logged, and the built files are returned all the same.
        A None description (see describe_graph) builds every time and touches nothing on disk.
        """
        if description is None:
            return build()
        files = self.load(description, names)
        if files is not None:
            _touch(self.folder(description) / MANIFEST)
            return files
        files = build()
        try:
            folder = self.store(description, files)
        except OSError as error:
            logger.warning("cannot write the graph cache in %s (%s); the graph is rebuilt next time",
                           self.root, first_line(error))
            return files
        self._prune(keep=folder)
        return files

    def load(self, description: dict, names: tuple[str, ...]) -> dict[str, bytes] | None:
        """The entry's files when its manifest matches ``description``, lists ``names`` and each file its hash."""
        folder = self.folder(description)
        if not (folder / MANIFEST).is_file():
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_bytes())
            problem = self._problem(manifest, description, names)
            files = {} if problem else {name: (folder / name).read_bytes() for name in manifest["files"]}
            problem = problem or next((f"{name} does not match its SHA-256" for name, data in files.items()
                                       if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]),
                                      None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            problem = f"unreadable ({first_line(error)})"
        if problem:
            logger.warning("graph cache entry %s is invalid: %s; rebuilding it", folder, problem)
            return None
        return files

    @staticmethod
    def _problem(manifest: Any, description: dict, names: tuple[str, ...]) -> str | None:
        """Why a manifest cannot vouch for this description's files, or None."""
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            return "the manifest is not a dict with a 'files' dict"
        if _canonical(manifest.get("description")) != _canonical(description):
            return "the manifest describes another graph"
        if sorted(manifest["files"]) != sorted(names):
            return f"the manifest lists {sorted(manifest['files'])}, not {sorted(names)}"
        return None

    def store(self, description: dict, files: dict[str, bytes]) -> Path:
        """Write the files, then the manifest, each atomically; returns the entry folder.

        Temporary files that a process killed while storing this entry left in its folder are removed first.
        """
        folder = self.folder(description)
        remove_stale_temp_files(folder)
        for name, data in files.items():
            if not _plain_name(name):
                raise ValueError(f"graph file name {name!r} must be a plain file name")
            write_bytes_atomic(folder / name, data)
        manifest = {"description": description,
                    "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                              for name, data in files.items()}}
        write_bytes_atomic(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        return folder

    def _prune(self, keep: Path) -> None:
        """Remove the least recently used entries beyond ``max_entries``, never ``keep``."""
        with contextlib.suppress(OSError):
            others = [folder for folder in self.root.iterdir() if folder.is_dir() and folder != keep]
            for folder in sorted(others, key=_last_use, reverse=True)[self.max_entries - 1:]:
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("graph cache: removed the least recently used entry %s", folder)


def _last_use(folder: Path) -> tuple[int, str]:
    """Sort key of an entry: its manifest's modification time (the folder's without one), then its name."""
    manifest = folder / MANIFEST
    try:
        return (manifest if manifest.exists() else folder).stat().st_mtime_ns, folder.name
    except OSError:  # removed meanwhile
        return 0, folder.name


def _touch(path: Path) -> None:
    """Mark an entry as used now; an entry that cannot be touched just ages."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and Path(name).name == name
