"""Rewrite the build host's Python and numpy include paths baked into the ROS 2 wheels' CMake files.

The PyPI wheels name /opt/python/cp311-cp311/... in their CMake export files, and CMake refuses
"non-existent path" includes. Usage: python repair_cmake_paths.py VENV
"""
import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_HOST_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILD_HOST_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def repair(prefix: Path) -> int:
    """Rewrite every share/**/*.cmake under prefix; returns the number of files changed."""
    replacements = {
        BUILD_HOST_PYTHON_INCLUDE: sysconfig.get_paths()["include"],
        BUILD_HOST_NUMPY_INCLUDE: numpy.get_include(),
    }
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text()
        repaired = text
        for old, new in replacements.items():
            repaired = repaired.replace(old, new)
        if repaired != text:
            path.write_text(repaired)
            changed += 1
    return changed


if __name__ == "__main__":
    print(f"repaired {repair(Path(sys.argv[1]))} CMake files", file=sys.stderr)
