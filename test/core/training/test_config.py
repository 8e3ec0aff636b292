"""TrainConfig: YAML loading, strict keys and types, dict round-trip."""
from pathlib import Path

import pytest
import torch
import yaml

from usp_core.training.config import ConfigError, TrainConfig, from_dict, load_config, save_config, to_dict

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_dict_round_trip_of_defaults_and_changes():
    config = TrainConfig()
    assert from_dict(to_dict(config)) == config
    changed = from_dict({"batch_size": 3, "model": {"widths": [8] * 8, "descriptor_dim": 16},
                         "homography": {"scale_range": [0.5, 2]}, "optimizer": {"lr": "1e-4"}})
    assert changed.model.widths == (8,) * 8 and changed.homography.scale_range == (0.5, 2.0)
    assert changed.optimizer.lr == pytest.approx(1e-4) and changed.loss == TrainConfig().loss
    assert from_dict(to_dict(changed)) == changed


def test_to_dict_is_plain_yaml_and_weights_only_data(tmp_path: Path):
    data = to_dict(TrainConfig())
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    torch.save({"config": data}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["config"] == data


def test_shipped_train_yaml_loads_and_matches_saved_form(tmp_path: Path):
    config = load_config(REPO_ROOT / "config" / "train.yaml")
    assert config.image_size == (240, 320)
    assert load_config(save_config(config, tmp_path / "again.yaml")) == config


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "config").glob("train*.yaml")), ids=lambda path: path.name)
def test_every_shipped_training_config_loads(path: Path):
    config = load_config(path)
    assert config.steps > 0 and config.batch_size > 0


@pytest.mark.parametrize("campaign", sorted((REPO_ROOT / "campaign").glob("*.pt")), ids=lambda path: path.name)
def test_each_committed_campaign_holds_the_config_that_continues_it(campaign: Path):
    config = load_config(REPO_ROOT / "config" / f"train_{campaign.stem}.yaml")
    saved = torch.load(campaign, map_location="cpu", weights_only=True)
    assert from_dict(saved["config"]) == config  # resuming with the committed config changes nothing
    assert 0 < saved["step"] <= config.steps


@pytest.mark.parametrize("text, message", [
    ("batch_sise: 4\n", "unknown config key 'batch_sise'"),
    ("model:\n  width: [8, 8]\n", "unknown config key 'model.width'"),
    ("loss:\n  a_usp: one\n", "'loss.a_usp' must be float"),
    ("steps: 1.5\n", "'steps' must be int"),
    ("image_size: [240]\n", "'image_size' must have 2 items"),
    ("image_size: [100, 320]\n", "multiples of 8"),
    ("amp: fp8\n", "amp must be one of"),
    ("optimizer: 3\n", "section 'optimizer' must be a mapping"),
    ("- a\n- b\n", "section 'config' must be a mapping"),
    ("steps: [\n", "cannot parse config"),
])
def test_bad_files_raise_one_clear_config_error(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_empty_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == TrainConfig()
