"""Atomic output files and the JSON form of the results."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write data to path via a temporary file in the same folder and os.replace (never a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _finite_or_none(value):
    """Recursively replace NaN / infinite floats by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_json(methods: dict[str, dict], settings: dict) -> str:
    """{"methods": {name: summary}, "settings": {...}} as indented JSON; undefined numbers become null."""
    return json.dumps(_finite_or_none({"methods": methods, "settings": settings}), indent=2) + "\n"
