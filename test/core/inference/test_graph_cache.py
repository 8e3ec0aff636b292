"""Tests of usp_core.inference.graph_cache: keys follow what changes a graph, entries are verified before use."""
import inspect
import json
import logging
import os

import pytest
import torch

from usp_core.inference.graph_cache import MANIFEST, GraphCache, describe_graph, weights_digest
from usp_core.models.layers import ModelConfig
from usp_core.models.superpoint import SuperPoint
from usp_core.models.unsuperpoint import UnsuperPoint

SMALL = ModelConfig(widths=(4, 4, 8, 8, 8, 8, 16, 16), descriptor_dim=8)


class Runner:
    """Stands in for a backend's runner class: its module (this file) is part of the key."""


def _describe(model, runtime_version="1.0", runner=Runner):
    return describe_graph(model, "runtime", runtime_version, inputs="dynamic", precision="f32", runner=runner)


def _description(model=None, runtime_version="1.0"):
    torch.manual_seed(0)
    return _describe(model if model is not None else UnsuperPoint(SMALL), runtime_version)


def _builder(files):
    calls = []

    def build():
        calls.append(1)
        return dict(files)
    return build, calls


def test_description_changes_with_weights_config_and_runtime_version():
    torch.manual_seed(0)
    model = UnsuperPoint(SMALL)
    base = _describe(model)
    assert _describe(model) == base
    assert _describe(model, "1.1") != base
    with torch.no_grad():
        model.score_head[1].bias += 1e-3
    assert _describe(model)["weights"] != base["weights"]
    torch.manual_seed(0)
    other = UnsuperPoint(ModelConfig(widths=SMALL.widths, descriptor_dim=8, negative_slope=0.2))
    changed = _describe(other)
    assert changed["weights"] == base["weights"] and changed["model_config"] != base["model_config"]
    assert base["model_class"] == "usp_core.models.unsuperpoint.UnsuperPoint"


def test_description_covers_the_model_layers_export_and_runner_sources():
    torch.manual_seed(0)
    model = UnsuperPoint(SMALL)
    sources = _describe(model)["sources"]
    assert set(sources) == {"model", "layers", "export", "runner"}
    assert all(len(digest) == 64 for digest in sources.values())
    assert len(set(sources.values())) == 4  # four different files: UnsuperPoint's module is not the layers'
    other_runner = _describe(model, runner=GraphCache)["sources"]  # a class of another module
    assert other_runner["runner"] != sources["runner"] and other_runner["model"] == sources["model"]
    superpoint = _describe(SuperPoint(ModelConfig(architecture="superpoint", widths=SMALL.widths,
                                                   descriptor_dim=SMALL.descriptor_dim)))["sources"]
    assert superpoint["model"] != sources["model"] and superpoint["layers"] == sources["layers"]


def test_unreadable_source_means_no_caching(tmp_path, monkeypatch, caplog):
    real = inspect.getsourcefile
    monkeypatch.setattr(inspect, "getsourcefile", lambda owner: None if owner is Runner else real(owner))
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.graph_cache"):
        assert _description() is None
    assert f"cannot read the source of {Runner.__name__}; the runtime graph is not cached" in caplog.text
    cache = GraphCache(tmp_path)
    build, calls = _builder({"model.bin": b"x"})
    for _ in range(2):
        assert cache.get_or_build(None, ("model.bin",), build) == {"model.bin": b"x"}
    assert len(calls) == 2 and not tmp_path.joinpath("graphs").exists()


def test_weights_digest_covers_every_dtype():
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert len(weights_digest(model)) == 64


NAMES = ("model.bin", "model.xml")


def test_entry_is_built_once_then_read_back(tmp_path):
    cache = GraphCache(tmp_path)
    build, calls = _builder({"model.bin": b"weights", "model.xml": b"<graph/>"})
    assert cache.get_or_build(_description(), NAMES, build) == {"model.bin": b"weights", "model.xml": b"<graph/>"}
    assert cache.get_or_build(_description(), NAMES, build) == {"model.bin": b"weights", "model.xml": b"<graph/>"}
    assert len(calls) == 1
    build_new, calls_new = _builder({"model.bin": b"other", "model.xml": b"<graph/>"})
    cache.get_or_build(_description(runtime_version="2.0"), NAMES, build_new)
    assert len(calls_new) == 1 and len(list(cache.root.iterdir())) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest", "foreign", "unlisted"])
def test_damaged_entries_are_rebuilt_not_trusted(tmp_path, caplog, damage):
    cache = GraphCache(tmp_path)
    description = _description()
    folder = cache.store(description, {"model.bin": b"0123456789", "model.xml": b"<graph/>"})
    if damage == "flip":
        (folder / "model.bin").write_bytes(b"0123456780")
    elif damage == "truncate":
        (folder / "model.bin").write_bytes(b"01234")
    elif damage == "delete":
        (folder / "model.xml").unlink()
    elif damage == "manifest":
        (folder / MANIFEST).write_bytes(b'{"files": ')
    elif damage == "foreign":  # a manifest that vouches for another graph
        manifest = json.loads((folder / MANIFEST).read_bytes())
        manifest["description"]["weights"] = "0" * 64
        (folder / MANIFEST).write_text(json.dumps(manifest))
    else:  # a manifest that leaves a file out
        manifest = json.loads((folder / MANIFEST).read_bytes())
        del manifest["files"]["model.xml"]
        (folder / MANIFEST).write_text(json.dumps(manifest))
    build, calls = _builder({"model.bin": b"rebuilt", "model.xml": b"<graph/>"})
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.graph_cache"):
        assert cache.get_or_build(description, NAMES, build)["model.bin"] == b"rebuilt"
    assert len(calls) == 1 and "is invalid" in caplog.text and str(folder) in caplog.text
    assert cache.load(description, NAMES)["model.bin"] == b"rebuilt"  # replaced on disk, and verified


def test_manifest_cannot_point_outside_its_entry(tmp_path):
    cache = GraphCache(tmp_path)
    description = _description()
    (tmp_path / "secret").write_bytes(b"x")
    folder = cache.store(description, {"model.bin": b"x"})
    manifest = json.loads((folder / MANIFEST).read_bytes())
    manifest["files"] = {"../../secret": manifest["files"]["model.bin"]}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert cache.load(description, ("model.bin",)) is None
    with pytest.raises(ValueError, match="plain file name"):
        cache.store(description, {"../escape": b"x"})


def test_unwritable_cache_still_returns_the_built_graph(tmp_path, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    cache = GraphCache(blocker)
    build, calls = _builder({"model.bin": b"x"})
    with caplog.at_level(logging.WARNING, logger="usp_core.inference.graph_cache"):
        assert cache.get_or_build(_description(), ("model.bin",), build) == {"model.bin": b"x"}
    assert "cannot write the graph cache" in caplog.text


def test_least_recently_used_entries_beyond_the_cap_are_removed(tmp_path):
    cache = GraphCache(tmp_path, max_entries=2)
    descriptions = [_description(runtime_version=str(version)) for version in range(4)]
    folders = []
    for age, description in enumerate(descriptions[:2]):
        build, _ = _builder({"model.bin": b"x"})
        cache.get_or_build(description, ("model.bin",), build)
        folders.append(cache.folder(description))
        os.utime(folders[-1] / MANIFEST, ns=(age * 10**9, age * 10**9))  # entry 0 is the oldest
    build, calls = _builder({"model.bin": b"y"})
    cache.get_or_build(descriptions[0], ("model.bin",), build)  # a hit makes entry 0 the newest
    assert not calls
    cache.get_or_build(descriptions[2], ("model.bin",), build)
    assert sorted(cache.root.iterdir()) == sorted([folders[0], cache.folder(descriptions[2])])
    cache.get_or_build(descriptions[3], ("model.bin",), build)  # entry 2 is newer than entry 0's hit
    assert len(list(cache.root.iterdir())) == 2 and cache.folder(descriptions[3]).is_dir()
    with pytest.raises(ValueError, match="max_entries"):
        GraphCache(tmp_path, max_entries=0)


def test_default_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("USP_ROS_CACHE_DIR", str(tmp_path / "mine"))
    assert GraphCache().root == tmp_path / "mine" / "graphs"
    monkeypatch.delenv("USP_ROS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert GraphCache().root == tmp_path / "xdg" / "usp_ros" / "graphs"
