"""The JSON form of the results."""
from __future__ import annotations

import json
import math


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
