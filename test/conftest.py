"""Shared pytest fixtures: the data folder beside the repository (skipped when absent), real photos, and
the check of a command's one-line error.

Every test session also gets the environment set in pytest_configure: DDS on localhost, its own ROS
domain, and the graph cache (usp_core.inference.graph_cache) under build/ rather than the user's ~/.cache.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_GRAPH_CACHE = REPO_ROOT / "build" / "test_graph_cache"  # kept between sessions: exports are slow
SHARED_PHOTOS = ("eval/hpatches/v_churchill/1.png", "eval/oxford/boat/1.png")  # under SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when the folder is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_photos() -> list[np.ndarray]:
    """Grey uint8 photos (H, W) at their own sizes: matplotlib's Grace Hopper (always installed) first,
    then SHARED_PHOTOS from ../shared/data where present. Shared: do not modify them."""
    import matplotlib

    paths = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    paths += [SHARED_DATA / name for name in SHARED_PHOTOS]
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths if path.is_file()]


@pytest.fixture
def one_error_line(capsys):
    """A check that a command printed exactly one line on stderr, "<prog>: error: ...", holding every fragment.

    ``one_error_line(prog, *fragments)`` returns that line.
    """
    def check(prog: str, *fragments: str) -> str:
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, f"expected one line on stderr, got:\n{err}"
        assert err.startswith(f"{prog}: error: "), err
        for fragment in fragments:
            assert fragment in err, err
        return err
    return check


def pytest_configure(config):
    """Keep DDS on localhost, give this test session its own ROS domain, and keep exported graphs
    out of the user's cache.

    Runs before any test imports rclpy or builds a detector, so every node this session starts, in
    this process or in a child process (which inherits the environment), sees only its own
    session's peers and reads the graphs the tests exported beforehand.
    """
    import os

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("USP_ROS_CACHE_DIR", str(TEST_GRAPH_CACHE))
