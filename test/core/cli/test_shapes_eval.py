"""usp_core.evaluation.shapes and usp-shapes-eval: the matching metric, AP by hand, oracle/random detectors, the CLI."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from usp_core.cli import shapes_eval
from usp_core.evaluation.shapes import (CLASSICAL, average_precision, classical_maps, evaluate_maps, match_detections,
                                        max_f1_threshold, network_heatmaps, precision_recall_at, render_set, summarize,
                                        truth_in_region)
from usp_core.models.build import build_model
from usp_core.models.layers import ModelConfig
from usp_core.support.checkpoint import save_checkpoint

SIZE = (120, 160)
TINY = {"widths": (4, 4, 8, 8, 8, 8, 16, 16), "descriptor_dim": 8}
METHODS = ("MagicPoint", "FAST", "Harris", "Shi-Tomasi")


def _points(*xy) -> np.ndarray:
    return np.array(xy, dtype=np.float32).reshape(-1, 2)


def test_a_detection_within_4_px_is_correct_and_beyond_is_not():
    truth = _points((20, 20), (60, 20), (100, 20))
    detections = _points((23, 20), (60, 25), (100, 16))  # 3 px, 5 px, exactly 4 px
    correct = match_detections(detections, np.array([0.9, 0.8, 0.7]), truth)
    assert correct.tolist() == [True, False, True]


def test_each_truth_is_matched_once_by_the_best_scored_detection():
    truth = _points((20, 20))
    detections = _points((21, 20), (20, 20))  # the exact one scores lower: greedy by score gives the other
    assert match_detections(detections, np.array([0.9, 0.8]), truth).tolist() == [True, False]
    assert match_detections(detections, np.array([0.5, 0.8]), truth).tolist() == [False, True]


def test_greedy_match_takes_the_nearest_free_truth():
    truth = _points((20, 20), (26, 20))
    detections = _points((23.5, 20), (21, 20))  # the first is nearer (26, 20); the second then takes (20, 20)
    assert match_detections(detections, np.array([0.9, 0.8]), truth).tolist() == [True, True]


def test_precision_recall_and_ap_by_hand():
    # Scores ranked TP, FP, TP with 3 truths: (P, R) = (1, 1/3), (1/2, 1/3), (2/3, 2/3);
    # AP = 1/3 * 1 + 0 * 1/2 + 1/3 * 2/3 = 5/9.
    scores, correct = np.array([0.7, 0.9, 0.8]), np.array([True, True, False])
    assert average_precision(scores, correct, 3) == pytest.approx(5 / 9)
    assert precision_recall_at(scores, correct, 3, 0.75) == pytest.approx((1 / 2, 1 / 3, 2))
    assert precision_recall_at(scores, correct, 3, 0.0) == pytest.approx((2 / 3, 2 / 3, 3))
    assert max_f1_threshold(scores, correct, 3) == pytest.approx(0.7)  # F1 = 1/2, 2/5, 2/3


def test_tied_scores_enter_the_curve_together():
    # One threshold keeps both: P = 1/2, R = 1, whatever the order of the tied pair.
    for correct in ([True, False], [False, True]):
        assert average_precision(np.array([0.5, 0.5]), np.array(correct), 1) == pytest.approx(0.5)


def test_truth_in_region_keeps_the_pixels_detections_may_take():
    truth = _points((3.4, 50), (3.6, 50), (155.4, 50), (155.6, 50), (80, 115.6))
    assert truth_in_region(truth, SIZE, 4).tolist() == truth[[1, 2]].tolist()


@pytest.fixture(scope="module")
def renders():
    return render_set(40, 1_000_000, SIZE)


def test_an_oracle_heatmap_scores_one_and_a_random_one_scores_low(renders):
    images, truths = renders
    oracle = []
    for truth in truths:
        heatmap = np.zeros(SIZE, np.float32)
        pixels = np.floor(truth + 0.5).astype(int)
        heatmap[pixels[:, 1], pixels[:, 0]] = 1.0
        oracle.append(heatmap)
    pooled = evaluate_maps(oracle, truths)
    assert pooled.num_truth > 100
    result = summarize(pooled, threshold=0.5)
    assert (result["precision"], result["recall"], result["map"]) == (1.0, 1.0, 1.0)

    rng = np.random.default_rng(0)
    random = summarize(evaluate_maps([rng.random(SIZE, dtype=np.float32) for _ in truths], truths))
    assert random["map"] < 0.1


def test_network_heatmaps_batches_and_keeps_the_order(renders):
    images = renders[0][:5]
    calls = []

    def heatmap(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        assert batch.dtype == torch.float32 and 0.0 <= batch.min() and batch.max() <= 1.0
        return batch

    maps = list(network_heatmaps(heatmap, images, batch_size=2))
    assert calls == [2, 2, 1]
    assert all(np.allclose(m * 255, image) for m, image in zip(maps, images))


def test_classical_maps_are_in_unit_range(renders):
    images = renders[0][:3]
    for detector in CLASSICAL.values():
        for score_map in classical_maps(detector, images):
            assert score_map.shape == SIZE and score_map.min() >= 0 and score_map.max() == pytest.approx(1.0)


def _checkpoint(path: Path, architecture: str) -> Path:
    model = build_model(ModelConfig(architecture=architecture, **TINY))
    save_checkpoint(path, {"model": model.state_dict(), "config": {"model": dataclasses.asdict(model.config)}})
    return path


def test_cli_prints_the_four_methods_and_writes_json(tmp_path: Path, capsys):
    weights = _checkpoint(tmp_path / "magicpoint.pt", "superpoint")
    out = tmp_path / "shapes.json"
    argv = ["--weights", str(weights), "--images", "4", "--threshold", "0.001", "--json", str(out)]
    assert shapes_eval.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")]
                                              for line in lines if line.startswith("| "))}
    assert list(rows)[1:] == list(METHODS)  # the header, then the methods in order
    for name in METHODS:
        precision, recall, mean_ap, per_image = (float(v) for v in rows[name])
        assert 0.0 <= min(precision, recall, mean_ap) and max(precision, recall, mean_ap) <= 1.0
        assert per_image > 0
    assert "4 Synthetic Shapes renders 120x160" in lines[-1]
    saved = json.loads(out.read_text())
    assert saved["settings"]["images"] == 4 and list(saved["methods"]) == list(METHODS)
    assert saved["methods"]["MagicPoint"]["threshold"] == 0.001
    assert saved["methods"]["FAST"]["operating_point"] == "max F1"


def test_cli_refuses_an_unsuperpoint_checkpoint_in_one_line(tmp_path: Path, one_error_line):
    weights = _checkpoint(tmp_path / "usp.pt", "unsuperpoint")
    assert shapes_eval.main(["--weights", str(weights), "--images", "2"]) == 2
    one_error_line("usp-shapes-eval", "architecture unsuperpoint", "this needs superpoint")


@pytest.mark.parametrize("extra, fragment", [
    (["--images", "0"], "--images must be >= 1"),
    (["--size", "120x161"], "bad --size"),
    (["--size", "big"], "bad --size"),
    (["--border", "60"], "--border"),
])
def test_cli_refuses_bad_numbers_in_one_line(tmp_path: Path, extra, fragment, one_error_line):
    weights = _checkpoint(tmp_path / "magicpoint.pt", "superpoint")
    assert shapes_eval.main(["--weights", str(weights), *extra]) == 2
    one_error_line("usp-shapes-eval", fragment)


def test_cli_refuses_an_unreadable_checkpoint_in_one_line(tmp_path: Path, one_error_line):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert shapes_eval.main(["--weights", str(garbage)]) == 2
    one_error_line("usp-shapes-eval", "cannot load checkpoint")
