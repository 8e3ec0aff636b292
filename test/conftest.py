"""Shared pytest fixtures: the data folder beside the repository, skipped when absent."""
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when the folder is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


def pytest_configure(config):
    """Keep DDS on localhost and give this test session its own ROS domain.

    Runs before any test imports rclpy, so every node this session starts, in this process or in
    a child process (which inherits the environment), sees only its own session's peers.
    """
    import os

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
