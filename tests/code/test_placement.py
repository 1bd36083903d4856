"""What a placed stage's run receives: enough to reproduce the stage's fingerprint in a fresh clone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.bridge import placement
from flows.bridge.placement import PlacementError, handoff, placed_stages, receive, upstream

ROOT = Path(__file__).resolve().parents[2]


def test_training_stages_read_upstream_outputs_through_the_remote_and_the_uncached_warm_start_file():
    assert upstream(ROOT, "train_frozen") == (["augment"], ["artifacts/production/train_frozen.json"])
    assert upstream(ROOT, "train_full") == (["augment", "train_frozen"], [])
    assert upstream(ROOT, "evaluate") == (["augment", "train_full"], [])


def test_placement_is_off_unless_a_deployment_is_named(monkeypatch):
    monkeypatch.delenv(placement.ENV_DEPLOYMENT, raising=False)
    assert placed_stages(None) == (None, frozenset())
    monkeypatch.setenv(placement.ENV_DEPLOYMENT, "train-stage/train-stage-gpu")
    assert placed_stages(None) == ("train-stage/train-stage-gpu", frozenset({"train_frozen", "train_full"}))
    assert "evaluate" in placed_stages("a/b", evaluate=True)[1]
    with pytest.raises(PlacementError, match="FLOW/DEPLOYMENT"):
        placed_stages("train-stage")


def test_a_fresh_clone_receives_params_upstream_locks_and_uncached_files(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    for root in (parent, child):
        root.mkdir()
        shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
        (root / "params.yaml").write_text("train_full: {epochs: 1}\n")
    (parent / "params.yaml").write_text("train_full: {epochs: 7}  # the run's override\n")
    (parent / "artifacts/production").mkdir(parents=True)
    (parent / "artifacts/production/train_frozen.json").write_text('{"version": null}')
    augment = {"cmd": "python -m tasks.augment", "outs": [{"path": "artifacts/shards", "md5": "abc.dir"}]}
    (parent / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"augment": augment}}))
    (child / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"ingest": {"cmd": "x"}}}))

    sent = handoff(parent, "train_frozen", "f" * 64)
    assert sent["locks"] == {"augment": augment} and sent["fingerprint"] == "f" * 64
    receive(child, sent["params"], sent["locks"], sent["files"])
    assert (child / "params.yaml").read_text() == (parent / "params.yaml").read_text()
    assert (child / "artifacts/production/train_frozen.json").read_text() == '{"version": null}'
    assert yaml.safe_load((child / "dvc.lock").read_text())["stages"] == {"ingest": {"cmd": "x"}, "augment": augment}

    with pytest.raises(PlacementError, match="outside the workspace"):
        receive(child, "", {}, {"../escape.txt": "x"})
    with pytest.raises(PlacementError, match=r"\['train_frozen'\] have no dvc.lock entry"):
        handoff(child, "train_full", "f" * 64)


def test_the_zombie_threshold_defaults_to_600_s_and_must_outlast_a_heartbeat(monkeypatch):
    monkeypatch.delenv(placement.ENV_ZOMBIE_AFTER, raising=False)
    assert placement.zombie_after_s() == 600
    monkeypatch.setenv(placement.ENV_ZOMBIE_AFTER, "90")
    assert placement.zombie_after_s() == 90
    for bad in ("30", "1.5", "ten"):
        monkeypatch.setenv(placement.ENV_ZOMBIE_AFTER, bad)
        with pytest.raises(PlacementError, match="TAGSMITH_ZOMBIE_AFTER_S"):
            placement.zombie_after_s()
