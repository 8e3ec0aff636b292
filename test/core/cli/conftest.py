"""Fixtures of the command tests."""
import pytest


@pytest.fixture
def eval_set(shared_data, tmp_path):
    """Two real pairs (Oxford wall 1-2 and boat 1-3) in the HPatches layout, linked into tmp_path/eval."""
    for sequence, k in (("wall", 2), ("boat", 3)):
        folder = tmp_path / "eval" / sequence
        folder.mkdir(parents=True)
        for name in ("1.png", f"{k}.png", f"H_1_{k}"):
            (folder / name).symlink_to(shared_data / "eval" / "oxford" / sequence / name)
    return tmp_path / "eval"
