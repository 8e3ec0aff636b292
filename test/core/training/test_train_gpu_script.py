"""scripts/train_gpu.sh, the one-call GPU recipe, run end to end on the CPU at its toy size (TINY=1)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from usp_core.inference import KeypointDetector

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_gpu.sh"


def _texture(seed: int, size=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, size, dtype=np.uint8), (5, 5), 1.5)


def _sequence(folder: Path, seed: int) -> None:
    """One HPatches-layout pair: a texture and its shift by (3, 2) px."""
    folder.mkdir(parents=True)
    image = _texture(seed)
    shift = np.array([[1.0, 0, 3], [0, 1.0, 2], [0, 0, 1]])
    cv2.imwrite(str(folder / "1.png"), image)
    cv2.imwrite(str(folder / "2.png"), cv2.warpPerspective(image, shift, image.shape[::-1]))
    np.savetxt(folder / "H_1_2", shift)


def test_the_gpu_recipe_leaves_chosen_weights_and_metrics(tmp_path):
    photos, evaluation, out = tmp_path / "photos", tmp_path / "eval", tmp_path / "out"
    photos.mkdir()
    for i in range(5):
        cv2.imwrite(str(photos / f"{i}.png"), _texture(i))
    _sequence(evaluation / "oxford" / "a", 10)
    _sequence(evaluation / "hpatches" / "b", 11)
    environment = {**os.environ, "TINY": "1", "OUT": str(out), "DATA": str(photos), "EVAL": str(evaluation),
                   "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "chosen: " in (out / "select.txt").read_text()
    chosen = json.loads((out / "select.json").read_text())["chosen"]
    assert Path(chosen).parent == out / "run" / "snapshots"
    detector = KeypointDetector.from_pretrained(out / "unsuperpoint.pt", backend="torch")
    assert detector.model.config.position_head == "softargmax"
    for name in ("oxford", "hpatches"):
        methods = json.loads((out / f"eval_{name}_64x96.json").read_text())["methods"]
        assert set(methods) == {"usp", "orb", "sift"}
