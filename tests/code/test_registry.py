"""Registry behaviour on a local-folder store (the default): content versions, verification,
aliases written last, promote/rollback, and the cache download path."""

import json
from pathlib import Path

import pytest

from tasks.registry import client as registry
from tasks.registry.client import RegistryError


def make_files(root: Path, tag: str) -> Path:
    root.mkdir(parents=True)
    (root / "model.keras").write_bytes(b"weights-" + tag.encode() * 100)
    (root / "saved_model" / "variables").mkdir(parents=True)
    (root / "saved_model" / "saved_model.pb").write_bytes(b"pb" + tag.encode())
    (root / "saved_model" / "variables" / "v.data").write_bytes(b"vars")
    for name in ("metadata.json", "thresholds.json"):
        (root / name).write_text(json.dumps({"tag": tag}))
    (root / "metrics.json").write_text(json.dumps({"map": 0.5}))
    (root / "model_card.md").write_text(f"# card {tag}\n")
    return root


def test_version_is_content_derived_and_publishing_twice_is_a_no_op(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    files = make_files(tmp_path / "a", "a")
    v1 = registry.publish_version(store, "m", files)
    assert v1.startswith("v-") and len(v1) == 14
    puts = []
    store.after_put = puts.append
    assert registry.publish_version(store, "m", files) == v1
    assert puts == []  # nothing rewritten
    assert registry.publish_version(store, "m", make_files(tmp_path / "b", "b")) != v1


def test_manifest_lists_every_file_with_checksums_and_verifies(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    v = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    manifest = json.loads((tmp_path / "reg" / "m" / v / "MANIFEST.json").read_text())
    assert "saved_model/variables/v.data" in manifest["files"]
    assert set(manifest["files"]["model.keras"]) == {"sha256", "size"}
    assert registry.verify(store, "m", v) == []
    (tmp_path / "reg" / "m" / v / "model.keras").write_bytes(b"weights-" + b"x" * 100)
    problems = registry.verify(store, "m", v)
    assert len(problems) == 1 and "model.keras" in problems[0] and "sha256" in problems[0]


def test_alias_refuses_incomplete_versions(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    v = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    (tmp_path / "reg" / "m" / v / "MANIFEST.json").unlink()
    with pytest.raises(RegistryError, match="no MANIFEST.json"):
        registry.set_alias(store, "m", "production", v)
    assert registry.get_alias(store, "m", "production") is None


def test_promote_and_rollback_move_the_alias_with_its_history(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    v2 = registry.publish_version(store, "m", make_files(tmp_path / "b", "b"))
    r1 = registry.promote(store, "m", v1, "production", by="tester")
    assert (r1.version, r1.previous, r1.by) == (v1, None, "tester")
    r2 = registry.promote(store, "m", v2, "production")
    assert (r2.version, r2.previous) == (v2, v1)
    assert registry.promote(store, "m", v2, "production") == r2  # same target: untouched
    back = registry.rollback(store, "m", "production")
    assert (back.version, back.previous) == (v1, v2)
    infos = {i.version: i for i in registry.list_versions(store, "m")}
    assert infos[v1].aliases == ["production"] and infos[v2].aliases == []
    assert infos[v1].complete and infos[v1].map == 0.5
    assert registry.show(store, "m", "production")["version"] == v1


def test_rollback_without_previous_is_an_error(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    registry.promote(store, "m", v1)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback(store, "m", "production")


def test_resolve_model_dir_returns_verified_version_folder(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    registry.promote(store, "m", v1)
    d = registry.resolve_model_dir(str(tmp_path / "reg"), "m", "production", tmp_path / "cache")
    assert (d / "model.keras").read_bytes().startswith(b"weights-a")
    with pytest.raises(RegistryError, match="neither a complete version nor an alias"):
        registry.resolve_model_dir(str(tmp_path / "reg"), "m", "staging", tmp_path / "cache")


def test_missing_required_file_is_refused_before_any_upload(tmp_path):
    store = registry.open_store(str(tmp_path / "reg"))
    files = make_files(tmp_path / "a", "a")
    (files / "thresholds.json").unlink()
    with pytest.raises(RegistryError, match="thresholds.json"):
        registry.publish_version(store, "m", files)
    assert not (tmp_path / "reg").exists()
