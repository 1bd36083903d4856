"""The publish stage's gate on a local registry: no baseline passes, a worse model is
rejected without moving the alias (and without failing), force overrides and says so,
publishing the same model again changes nothing; a model that loses one class is refused by
that class's check and the receipt and `registry show` name it; when production moves while
the gate compares, publish compares again with the new production and never overwrites it
unseen."""

import json

import pytest

from tasks import evaluate, publish
from tasks.registry import client as registry, lineage
from tasks.common.config import EvaluateConfig, PublishConfig, RegistryConfig
from tasks.common.errors import DataError

from tests.model.evalkit import make_model, make_shards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    shards = make_shards(root)
    for name, sign, lose in (("good", 1.0, None), ("bad", -1.0, None), ("lose_d", 1.0, 3)):
        make_model(root / name / "model", sign, lose)
        evaluate.run(EvaluateConfig(batch_size=8), root / name / "model", shards, root / name / "eval")
    return root


def stage(world, name, out, alias="production", splits_ledger=None, **kw):
    reg = RegistryConfig(store=str(world / "registry"), model_name="m", alias=alias)
    return publish.run(PublishConfig(**kw), world / name / "model", world / "shards", world / name / "eval",
                       world / out, reg=reg, splits_ledger=splits_ledger)


def test_gate_sequence(world):
    # 1. no production yet: passes as "no baseline"
    first = stage(world, "good", "p1")
    assert first.outcome == "published" and "no baseline" in first.receipt["gate"]["reason"]
    store = registry.open_store(str(world / "registry"))
    assert registry.get_alias(store, "m", "production").version == first.version
    # 2. same model again: nothing to do, same version
    again = stage(world, "good", "p2")
    assert (again.outcome, again.version) == ("unchanged", first.version)
    assert (world / "p1" / "receipt.json").read_bytes() != b""
    # 3. a much worse model: rejected, alias untouched, numbers of both in the receipt
    worse = stage(world, "bad", "p3")
    r = worse.receipt
    assert worse.outcome == "rejected" and not r["alias_moved"] and not r["published"]
    assert r["baseline"]["map"] == 1.0 and r["candidate"]["map"] < 0.7
    assert r["gate"]["baseline_version"] == first.version
    assert registry.get_alias(store, "m", "production").version == first.version
    assert worse.version not in [v.version for v in registry.list_versions(store, "m")]
    assert "REJECTED" in (world / "p3" / "gate.md").read_text()
    # 4. forced: published, alias moved, the record says forced
    forced = stage(world, "bad", "p4", force=True)
    assert forced.outcome == "forced" and forced.receipt["gate"]["forced"]
    assert forced.receipt["gate"]["reason"].startswith("FORCED")
    alias = registry.get_alias(store, "m", "production")
    assert (alias.version, alias.previous) == (worse.version, first.version)


def test_published_version_holds_metadata_with_thresholds_and_preprocess(world):
    store = registry.open_store(str(world / "registry"))
    version = stage(world, "good", "p5", alias="staging").version
    info = registry.show(store, "m", "staging")
    assert info["problems"] == [] and info["version"] == version
    meta = info["metadata"]
    assert meta["thresholds"]["classes"] == meta["classes"]
    assert meta["preprocess"] == {"image_size": 32, "resize": "stretch", "jpeg_quality": 95,
                                  "channel_order": "RGB", "value_range": [0, 255]}
    assert set(info["manifest"]["files"]) >= {"model.keras", "metadata.json", "thresholds.json",
                                              "metrics.json", "model_card.md", "saved_model/saved_model.pb"}


def test_lineage_travels_with_the_version_but_does_not_name_it(world, monkeypatch):
    reg = RegistryConfig(store=str(world / "registry-lineage"), model_name="m", alias="production")

    def run(ref, run_id, out):  # another run of the same model
        monkeypatch.setenv(lineage.ENV_REF, ref)
        monkeypatch.setenv(lineage.ENV_RUN_ID, run_id)
        good = world / "good"
        return publish.run(PublishConfig(), good / "model", world / "shards", good / "eval", world / out, reg=reg,
                           splits_ledger=None)

    first = run("refs/exps/ab/cdef/night-1", "run-1", "l1")
    again = run("refs/exps/ab/cdef/night-2", "run-2", "l2")
    assert first.outcome == "published" and (again.outcome, again.version) == ("unchanged", first.version)
    info = registry.show(registry.open_store(reg.store), "m", first.version)
    assert info["problems"] == [] and "lineage.json" in info["manifest"]["files"]
    assert info["lineage"]["ref"] == "refs/exps/ab/cdef/night-1" and info["lineage"]["flow_run"]["id"] == "run-1"
    assert set(info["lineage"]) >= {"commit", "data", "params", "parent", "repository"}


def test_receipt_is_deterministic_and_has_no_timestamps(world):
    a = stage(world, "good", "q1", alias="det")
    b = stage(world, "good", "q2", alias="det")
    assert b.outcome == "unchanged"
    text = (world / "q1" / "receipt.json").read_text()
    assert "set_at" not in text and str(world) not in text.replace(str(world / "registry"), "")
    assert json.loads(text)["version"] == a.version


def test_a_model_that_loses_one_class_is_refused_by_that_check(world):
    store = registry.open_store(str(world / "registry"))
    good = stage(world, "good", "c1", alias="classes")
    assert good.outcome == "published"
    # the mean may drop freely here: only the per-class check stands between d and oblivion
    lost = stage(world, "lose_d", "c2", alias="classes", max_map_drop=1.0, max_p1_drop=1.0, min_support=2)
    r = lost.receipt
    assert lost.outcome == "rejected" and r["gate"]["failed"] == ["class_ap:d"]
    assert r["compared_with"] == good.version and r["gate"]["baseline_version"] == good.version
    check = next(c for c in r["gate"]["checks"] if c["name"] == "class_ap:d")
    assert check["baseline"] == 1.0 and check["candidate"] < 0.9 and not check["passed"]
    assert {c["name"] for c in r["gate"]["checks"]} >= {"map", "p_at_1", "class_ap:a", "class_ap:d"}
    assert "failing checks: `class_ap:d`" in (world / "c2" / "gate.md").read_text()
    shown = registry.show(store, "m", lost.version)  # what `tagsmith registry show` prints
    assert shown["published"] is False and shown["gate"]["outcome"] == "rejected"
    assert shown["gate"]["gate"]["failed"] == ["class_ap:d"] and shown["gate"]["compared_with"] == good.version
    assert registry.get_alias(store, "m", "classes").version == good.version


def test_production_moving_during_the_gate_is_compared_again_not_overwritten(world, monkeypatch):
    store = registry.open_store(str(world / "registry"))
    bad = stage(world, "bad", "m1", alias="race", force=True).version
    other = stage(world, "lose_d", "m2", alias="race-other", force=True).version
    assert registry.get_alias(store, "m", "race").version == bad
    real = registry.publish_version
    moved = []

    def upload_while_someone_promotes(*args, **kw):  # between the comparison and the alias write
        out = real(*args, **kw)
        if not moved:
            moved.append(registry.promote(registry.open_store(str(world / "registry")), "m", other, "race"))
        return out

    monkeypatch.setattr(registry, "publish_version", upload_while_someone_promotes)
    s = stage(world, "good", "m3", alias="race")
    r = s.receipt
    assert s.outcome == "published" and r["alias_moves_seen"] == [{"from": bad, "to": other}]
    assert r["compared_with"] == other and r["alias_previous"] == other  # compared with the new production
    alias = registry.get_alias(store, "m", "race")
    assert [h["version"] for h in alias.history] == [bad, other, s.version]


def test_production_that_keeps_moving_stops_publish_with_a_clear_error(world, monkeypatch):
    store = registry.open_store(str(world / "registry"))
    a = stage(world, "bad", "k1", alias="busy", force=True).version
    b = stage(world, "lose_d", "k2", alias="busy-other", force=True).version
    real = registry.publish_version
    flips = iter([b, a, b, a])

    def upload_while_someone_promotes(*args, **kw):
        out = real(*args, **kw)
        registry.promote(registry.open_store(str(world / "registry")), "m", next(flips), "busy")
        return out

    monkeypatch.setattr(registry, "publish_version", upload_while_someone_promotes)
    with pytest.raises(registry.RegistryError, match="moved 3 times while .* was being gated.*not overwritten"):
        stage(world, "good", "k3", alias="busy")
    assert registry.get_alias(store, "m", "busy").version == b  # the other writer's last word


def test_a_missing_split_ledger_is_refused_before_anything_is_published(world):
    before = sorted((world / "registry").rglob("*"))
    with pytest.raises(DataError, match="no split ledger"):
        stage(world, "good", "nl", splits_ledger=world / "absent.tsv")
    assert sorted((world / "registry").rglob("*")) == before and not (world / "nl").exists()
