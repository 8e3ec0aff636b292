"""A few dozen CPU training steps on a tiny generated image set: the loss falls, checkpoints, exact resume."""
import dataclasses
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from usp_core.inference.detector import KeypointDetector
from usp_core.models.layers import ModelConfig
from usp_core.support.atomic import STALE_AFTER_S
from usp_core.support.checkpoint import CheckpointError
from usp_core.training.config import TrainConfig, from_dict, to_dict
from usp_core.training.losses import DistillConfig
from usp_core.training.trainer import Trainer, _split_branches, loss_scores, lr_factor

STEPS = 24
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "step", "config", "seed"}


def _blocks(seed: int) -> np.ndarray:
    """A 96x128 grey image of random filled rectangles: corners to find."""
    rng = np.random.default_rng(seed)
    image = np.full((96, 128), 20, np.uint8)
    for _ in range(25):
        x, y = rng.integers(0, 128), rng.integers(0, 96)
        w, h = rng.integers(5, 30, 2)
        cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), int(rng.integers(30, 255)), -1)
    return image


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> TrainConfig:
    root = tmp_path_factory.mktemp("tiny_images")
    for i in range(6):
        cv2.imwrite(str(root / f"{i}.png"), _blocks(i))
    return from_dict({
        "data_dir": str(root), "image_size": [64, 64], "val_fraction": 0.2, "batch_size": 4,
        "steps": STEPS, "val_interval": 8, "val_batches": 1, "checkpoint_interval": 100, "log_interval": 5,
        "num_workers": 0, "seed": 3,
        "model": {"widths": [8, 8, 16, 16, 16, 16, 32, 32], "descriptor_dim": 32},
        "optimizer": {"lr": 3e-3}, "schedule": {"warmup_steps": 3},
    })


@pytest.fixture(scope="module")
def full_run(tiny_config, tmp_path_factory) -> tuple[Trainer, Path]:
    out = tmp_path_factory.mktemp("full_run")
    trainer = Trainer(tiny_config, out, device="cpu", progress=False)
    trainer.train()
    return trainer, out


def test_total_loss_falls(full_run):
    trainer, _ = full_run
    totals = [h["total"] for h in trainer.history]
    assert [h["step"] for h in trainer.history] == list(range(1, STEPS + 1))
    assert np.mean(totals[-5:]) < 0.5 * np.mean(totals[:5])
    terms = {"total", "usp", "position", "score", "repeatability", "uni_xy", "desc", "decorr", "score_mean"}
    assert terms <= set(trainer.history[0])


def test_checkpoints_hold_every_entry_and_load_weights_only(full_run, tiny_config):
    _, out = full_run
    assert (out / "config.yaml").is_file()
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert CHECKPOINT_KEYS <= set(last) and CHECKPOINT_KEYS <= set(best)
    assert last["step"] == STEPS and best["step"] in (8, 16, 24)
    assert last["seed"] == 3 and last["config"]["model"]["descriptor_dim"] == 32
    assert from_dict(last["config"]) == tiny_config
    assert not list(out.glob(".*.tmp")), "temporary checkpoint files left behind"


def test_metrics_file_holds_train_and_validation_lines(full_run):
    _, out = full_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [m["step"] for m in lines if m["split"] == "train"]
    val_steps = [m["step"] for m in lines if m["split"] == "val"]
    assert train_steps == [5, 10, 15, 20, 24] and val_steps == [8, 16, 24]
    assert all({"total", "usp", "uni_xy", "desc", "decorr"} <= set(m) for m in lines)
    assert all("lr" in m for m in lines if m["split"] == "train")


def test_resume_continues_at_saved_step_with_identical_losses(full_run, tiny_config, tmp_path):
    uninterrupted, _ = full_run
    first = Trainer(tiny_config, tmp_path / "first", device="cpu", progress=False)
    first.train(max_steps=11)
    assert torch.load(tmp_path / "first" / "last.pt", weights_only=True)["step"] == 11

    resumed = Trainer(tiny_config, tmp_path / "second", device="cpu", progress=False)
    assert resumed.resume(tmp_path / "first" / "last.pt") == 11
    resumed.train()
    assert [h["step"] for h in resumed.history] == list(range(12, STEPS + 1))
    expected = [h["total"] for h in uninterrupted.history[11:]]
    assert [h["total"] for h in resumed.history] == expected
    final = torch.load(tmp_path / "second" / "last.pt", weights_only=True)["model"]
    reference = uninterrupted.model.state_dict()
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def test_snapshots_load_as_detectors_with_the_weights_of_their_step(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, snapshot_interval=5)
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    trainer.train(max_steps=10)
    names = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert names == ["step_000005.pt", "step_000010.pt"]
    early = torch.load(tmp_path / "snapshots" / names[0], weights_only=True)
    assert early["step"] == 5 and from_dict(early["config"]) == config
    detector = KeypointDetector.from_pretrained(tmp_path / "snapshots" / names[1], backend="torch")
    final = trainer.model.state_dict()
    assert all(torch.equal(detector.model.state_dict()[k], final[k]) for k in final)
    assert not all(torch.equal(early["model"][k], final[k]) for k in final)


def test_time_limit_stops_early_and_saves(tiny_config, tmp_path):
    trainer = Trainer(tiny_config, tmp_path, device="cpu", progress=False)
    trainer.train(time_limit=0.0)
    assert trainer.step == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 1


def test_training_starts_by_removing_what_killed_checkpoint_writes_left(tiny_config, tmp_path):
    stale = [tmp_path / ".last.pt.abcd1234.tmp", tmp_path / "snapshots" / ".step_000005.pt.x_y_z_01.tmp"]
    fresh = tmp_path / ".best.pt.fresh123.tmp"  # may belong to a writer at work: kept
    then = time.time() - 2 * STALE_AFTER_S
    for path in [*stale, fresh]:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    for path in stale:
        os.utime(path, (then, then))
    Trainer(tiny_config, tmp_path, device="cpu", progress=False).train(time_limit=0.0)
    assert not any(path.exists() for path in stale) and fresh.exists()


def test_distillation_brings_a_fast_student_towards_its_teacher(full_run, tiny_config, tmp_path):
    _, teacher_run = full_run
    student = dataclasses.replace(
        tiny_config, model=ModelConfig(backbone="fast", widths=(4, 8, 16, 32, 32), descriptor_dim=32),
        distill=DistillConfig(teacher=str(teacher_run / "last.pt")))
    trainer = Trainer(student, tmp_path, device="cpu", progress=False)
    trainer.train(max_steps=16)
    distill = [h["distill"] for h in trainer.history]
    assert {"distill_position", "distill_score", "distill_descriptor"} <= set(trainer.history[0])
    assert np.mean(distill[-4:]) < 0.7 * np.mean(distill[:4])
    assert all(h["total"] > h["distill"] for h in trainer.history)  # added to the self-supervised terms


def test_a_teacher_with_other_descriptors_is_refused(full_run, tiny_config, tmp_path):
    _, teacher_run = full_run
    config = dataclasses.replace(tiny_config, model=ModelConfig(descriptor_dim=16),
                                 distill=DistillConfig(teacher=str(teacher_run / "last.pt")))
    with pytest.raises(CheckpointError, match="32-d descriptors, the model 16-d"):
        Trainer(config, tmp_path, device="cpu", progress=False)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    trainer = Trainer(from_dict({"image_size": [32, 32]}), tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="no training data folder"):
        trainer.train()


def test_lr_schedule_warms_up_then_decays_to_floor():
    factors = [lr_factor(s, total_steps=100, warmup_steps=10, min_ratio=0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_without_validation_split_no_best_checkpoint(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config, val_fraction=0.0, steps=2, val_interval=1)
    trainer = Trainer(config, tmp_path, device="cpu", progress=False)
    assert trainer.train() == {}
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()


FAST_REGRESSION = {"backbone": "fast", "widths": [8, 16, 16, 32, 32], "descriptor_dim": 32}
DENSE_LOSS = {"a_uni_xy": 0.0, "a_desc": 0.0, "a_reprojection": 1.0, "a_peakiness": 0.5, "a_dense_desc": 0.01}


def _with(config: TrainConfig, **changes) -> TrainConfig:
    return from_dict({**to_dict(config), **changes})


def test_the_parabola_fit_trains_the_positions_inference_returns(tiny_config, tmp_path):
    loss = {**DENSE_LOSS, "a_usp": 0.0, "a_decorr": 0.0, "a_dense_desc": 0.0, "a_peakiness": 0.0,
            "position_fit": "parabola"}
    config = _with(tiny_config, model={**FAST_REGRESSION, "position_head": "softargmax"}, loss=loss)
    trainer = Trainer(config, tmp_path / "parabola", device="cpu", progress=False)
    batch = next(trainer._train_batches())  # one batch, fitted again and again: only the fit's gradients act
    reprojection = [trainer.train_step(batch)["reprojection"].item() for _ in range(40)]
    assert np.isfinite(reprojection).all()
    assert np.mean(reprojection[-5:]) < 0.85 * reprojection[0]  # with the fit detached it stays where it starts
    with pytest.raises(ValueError, match="position_fit"):
        _with(tiny_config, loss={**loss, "position_fit": "centroid"})


def test_standardised_scores_keep_the_ranking_ignore_the_logit_scale_and_train_saturated_scores(tiny_config, tmp_path):
    """L_usp may read sigmoid of each image's standardised logits: inference's ranking of the cells, the same scores
    for logits scaled up (a network cannot saturate them so), and a gradient where sigmoid(logit) saturates (every
    cell above 0.9998 here), which the plain scores all but lose."""
    head_gradient = {}
    for standardise in (False, True):
        config = _with(tiny_config, loss={"a_uni_xy": 0.0, "a_desc": 0.0, "score_standardise": standardise})
        trainer = Trainer(config, tmp_path / f"s{standardise}", device="cpu", progress=False)
        batch = next(trainer._train_batches())
        maps, _ = _split_branches(trainer.model(batch[0], training=True), batch[0].shape[0])
        read = loss_scores(maps, standardise).score
        if standardise:
            ranking = maps.dense.score.flatten(1).argsort(dim=1, stable=True)  # per image, as selection ranks
            assert torch.equal(read.flatten(1).argsort(dim=1, stable=True), ranking)
            standardised = torch.logit(read.double()).flatten(1)  # each image's logits at mean 0, std 1
            torch.testing.assert_close(standardised.mean(dim=1), torch.zeros(len(read), dtype=torch.double),
                                       atol=1e-4, rtol=0)
            torch.testing.assert_close(standardised.std(dim=1), torch.ones(len(read), dtype=torch.double),
                                       atol=1e-3, rtol=0)
            scaled = maps._replace(score_logit=3.0 * maps.score_logit + 2.0)
            assert torch.allclose(loss_scores(scaled, standardise).score, read, atol=1e-5)
        else:
            assert torch.equal(read, maps.dense.score)
        head = trainer.model.score_head[-1]
        with torch.no_grad():
            head.weight.mul_(0.05)
            head.bias.fill_(9.0)
        trainer.model.zero_grad()
        trainer._losses(batch)["total"].backward()
        head_gradient[standardise] = head.weight.grad.norm().item()
    assert head_gradient[True] > 20 * head_gradient[False] > 0


def test_a_softargmax_head_starts_on_regression_weights_and_learns_with_the_dense_terms(tiny_config, tmp_path,
                                                                                         caplog):
    regression = Trainer(_with(tiny_config, model=FAST_REGRESSION), tmp_path / "v2", device="cpu", progress=False)
    snapshot = regression.save_snapshot()
    config = _with(tiny_config, model={**FAST_REGRESSION, "position_head": "softargmax"}, loss=DENSE_LOSS, steps=20)
    trainer = Trainer(config, tmp_path / "v3", device="cpu", progress=False)
    with caplog.at_level("INFO", logger="usp_core.training.trainer"):
        trainer.initialize_from(snapshot)
    assert "new: fine_head; not used: position_head" in caplog.text
    for name, value in regression.model.backbone.state_dict().items():
        assert torch.equal(trainer.model.backbone.state_dict()[name], value), name
    trainer.train()
    descriptor = [h["dense_desc"] for h in trainer.history]
    assert all(np.isfinite([h["total"] for h in trainer.history]))
    assert np.mean(descriptor[-5:]) < np.mean(descriptor[:5])
    assert {"reprojection", "peakiness"} <= set(trainer.history[-1])


def test_a_lite_network_starts_on_full_weights_and_names_what_it_dropped(tiny_config, tmp_path, caplog):
    softargmax = {**FAST_REGRESSION, "position_head": "softargmax"}
    full = Trainer(_with(tiny_config, model=softargmax), tmp_path / "full", device="cpu", progress=False)
    lite_model = {**softargmax, "blocks": [1, 1, 2, 2, 2], "fine_upsample": "nearest"}
    lite = Trainer(_with(tiny_config, model=lite_model), tmp_path / "lite", device="cpu", progress=False)
    with caplog.at_level("INFO", logger="usp_core.training.trainer"):
        lite.initialize_from(full.save_snapshot())
    assert "initialised the model from" in caplog.text and "; not used: backbone.to_eighth.1.2\n" in caplog.text
    assert "new:" not in caplog.text
    for name, value in lite.model.fine_head.state_dict().items():
        assert torch.equal(full.model.fine_head.state_dict()[name], value), name


V3 = {**FAST_REGRESSION, "position_head": "softargmax"}
V4 = {**V3, "fine_descriptor_width": 16}


@pytest.mark.parametrize("start, added, new, output_layer", [
    (V3, {"fine_descriptor_width": 16}, "point_descriptors", lambda model: model.point_descriptors.fine[-1]),
    (V4, {"fine_score_width": 8}, "point_scores", lambda model: model.point_scores.mlp[-1])],
    ids=["fine-descriptors-on-v3", "fine-scores-on-v4"])
def test_a_point_mlp_starts_at_zero_on_weights_without_it_and_the_losses_train_it(tiny_config, tmp_path, caplog,
                                                                                   start, added, new, output_layer):
    before = Trainer(_with(tiny_config, model=start), tmp_path / "before", device="cpu", progress=False)
    config = _with(tiny_config, model={**start, **added}, loss={**DENSE_LOSS, "a_dense_desc": 0.1}, steps=10)
    after = Trainer(config, tmp_path / "after", device="cpu", progress=False)
    with caplog.at_level("INFO", logger="usp_core.training.trainer"):
        after.initialize_from(before.save_snapshot())
    assert caplog.text.rstrip().endswith(f"; new: {new}")
    output = output_layer(after.model)
    assert output.weight.abs().max() == 0
    after.train()
    assert output.weight.abs().max() > 0  # the losses train the MLP


def test_initialising_from_weights_of_another_size_is_refused(tiny_config, tmp_path):
    snapshot = Trainer(_with(tiny_config, model=FAST_REGRESSION), tmp_path / "a", device="cpu",
                       progress=False).save_snapshot()
    other = Trainer(_with(tiny_config, model={**FAST_REGRESSION, "descriptor_dim": 16}), tmp_path / "b",
                    device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="size mismatch for descriptor_head"):
        other.initialize_from(snapshot)
