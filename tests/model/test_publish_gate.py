"""The publish stage's gate on a local registry: no baseline passes, a worse model is
rejected without moving the alias (and without failing), force overrides and says so,
publishing the same model again changes nothing."""

import json

import pytest

from tasks import evaluate, publish
from tasks.registry import client as registry
from tasks.common.config import EvaluateConfig, PublishConfig

from tests.model.evalkit import make_model, make_shards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    shards = make_shards(root)
    for name, sign in (("good", 1.0), ("bad", -1.0)):
        make_model(root / name / "model", sign)
        evaluate.run(EvaluateConfig(batch_size=8), root / name / "model", shards, root / name / "eval")
    return root


def stage(world, name, out, **kw):
    cfg = PublishConfig(store=str(world / "registry"), model_name="m", **kw)
    return publish.run(cfg, world / name / "model", world / "shards", world / name / "eval", world / out)


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


def test_receipt_is_deterministic_and_has_no_timestamps(world):
    a = stage(world, "good", "q1", alias="det")
    b = stage(world, "good", "q2", alias="det")
    assert b.outcome == "unchanged"
    text = (world / "q1" / "receipt.json").read_text()
    assert "set_at" not in text and str(world) not in text.replace(str(world / "registry"), "")
    assert json.loads(text)["version"] == a.version
