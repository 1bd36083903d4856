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


def _promote_in_child(root: str, version: str, barrier, out) -> None:
    """A separate process promoting ``version``, writing only once every racer has read the alias."""
    store = registry.open_store(root)
    put_if = store.put_if

    def put_after_everyone_read(*args, **kw):
        barrier.wait(timeout=30)
        return put_if(*args, **kw)

    store.put_if = put_after_everyone_read
    try:
        out.put(("won", registry.promote(store, "m", version, by=f"proc-{version}").version))
    except registry.AliasConflict as e:
        out.put(("lost", str(e)))


def test_concurrent_promotes_from_two_processes_one_wins_the_loser_names_the_winner(tmp_path):
    import multiprocessing

    store = registry.open_store(str(tmp_path / "reg"))
    v0, v1, v2 = (registry.publish_version(store, "m", make_files(tmp_path / t, t)) for t in ("z", "a", "b"))
    registry.promote(store, "m", v0)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_in_child, args=(str(tmp_path / "reg"), v, barrier, out)) for v in (v1, v2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    (lost, message), (won, winner) = results
    assert (lost, won) == ("lost", "won") and winner in (v1, v2)
    assert f"now points at {winner} (set by proc-{winner} via promote" in message
    final = registry.get_alias(store, "m", "production")
    assert [h["version"] for h in final.history] == [v0, winner] and final.previous == v0
    assert [i.aliases for i in registry.list_versions(store, "m") if i.version == winner] == [["production"]]


def test_resolved_inputs_change_only_with_what_each_stage_reads(tmp_path):
    from tasks.common.config import RegistryConfig, TrainFrozenConfig
    from tasks.registry import resolved

    reg = str(tmp_path / "reg")
    store = registry.open_store(reg)
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    v2 = registry.publish_version(store, "m", make_files(tmp_path / "b", "b"))
    pub = RegistryConfig(store=reg, model_name="m")
    warm, cold = TrainFrozenConfig(weights="production"), TrainFrozenConfig(weights="none")
    assert resolved.publish_input(pub)["version"] is None  # no production yet: still a definite input
    registry.promote(store, "m", v1)
    before = (resolved.publish_input(pub), resolved.train_frozen_input(warm, pub), resolved.train_frozen_input(cold, pub))
    registry.promote(store, "m", v2)
    after = (resolved.publish_input(pub), resolved.train_frozen_input(warm, pub), resolved.train_frozen_input(cold, pub))
    assert before[0]["version"] == v1 and after[0]["version"] == v2
    assert before[1]["version"] == v1 and after[1]["version"] == v2
    assert before[2] == after[2] == {"reads_registry": False}  # weights none reads nothing
    out = tmp_path / "artifacts" / "production"
    resolved.write({"train_frozen": after[1]}, out)
    assert resolved.pinned_version("train_frozen", reg, "m", "production", out) == v2
    assert resolved.pinned_version("train_frozen", reg, "m", "staging", out) is None  # another alias
    assert resolved.pinned_version("publish", reg, "m", "production", out) is None  # never resolved


def test_a_versions_split_ledger_is_ingests_input_verified_and_cached(tmp_path):
    from tasks.common.config import RegistryConfig
    from tasks.registry import resolved

    reg = str(tmp_path / "reg")
    store = registry.open_store(reg)
    old = registry.publish_version(store, "m", make_files(tmp_path / "old", "a"))  # before versions carried one
    files = make_files(tmp_path / "new", "a")
    (files / registry.SPLITS_FILE).write_text("sha256\tsplit\tphash\tpath\n")
    new = registry.publish_version(store, "m", files)
    assert new == old  # the ledger, like lineage.json, is not part of the model's name
    files = make_files(tmp_path / "b", "b")
    (files / registry.SPLITS_FILE).write_text("the ledger\n")
    v = registry.publish_version(store, "m", files)
    cfg, cache = RegistryConfig(store=reg, model_name="m"), tmp_path / "cache"
    assert resolved.ingest_input({"version": None}, cfg, cache) == ({"version": None, "ledger": None}, None)
    assert resolved.ingest_input({"version": old}, cfg, cache)[1] is None
    info, path = resolved.ingest_input({"version": v}, cfg, cache)
    assert path == cache / "m/ledgers" / f"{v}.tsv" and path.read_text() == "the ledger\n"
    assert info["ledger"]["sha256"] == registry.build_manifest(files)["files"]["splits.tsv"]["sha256"]
    (tmp_path / "reg/m" / v / "splits.tsv").write_text("tampered\n")  # the cached copy is still right
    assert resolved.ingest_input({"version": v}, cfg, cache)[1].read_text() == "the ledger\n"
    path.unlink()
    with pytest.raises(RegistryError, match="does not match"):
        resolved.ingest_input({"version": v}, cfg, cache)
    (tmp_path / "reg/m" / v / "splits.tsv").write_text("the ledger\n")
    assert resolved.ingest_input({"version": v}, cfg, cache)[1] == path
    (tmp_path / "reg/m" / v / "MANIFEST.json").unlink()  # the store lost it: the verified copy stands in
    assert resolved.ingest_input({"version": v}, cfg, cache)[1].read_text() == "the ledger\n"
    with pytest.raises(RegistryError, match="no MANIFEST.json"):
        resolved.ingest_input({"version": v}, cfg, tmp_path / "fresh-cache")


def test_ingest_keeps_the_splits_of_a_warm_start_version_that_is_not_production(tmp_path):
    from tasks.common.config import RegistryConfig
    from tasks.resolve_production import ingest_ledger
    from tasks.splits import ledger

    reg = str(tmp_path / "reg")
    store = registry.open_store(reg)
    h = [f"{i:064x}" for i in range(3)]
    versions = {}
    for name, rows in {"prod": [(h[0], "train"), (h[1], "test")], "warm": [(h[1], "val"), (h[2], "train")]}.items():
        files = make_files(tmp_path / name, name)
        ledger.write(files / registry.SPLITS_FILE, {s: ledger.Entry(s, split, "0" * 16, f"{s[-1]}.jpg") for s, split in rows})
        versions[name] = registry.publish_version(store, "m", files)
    cfg, cache = RegistryConfig(store=reg, model_name="m"), tmp_path / "cache"
    prod = {"store": reg, "model": "m", "alias": "production", "version": versions["prod"]}
    warm = {**prod, "alias": "staging", "version": versions["warm"]}
    info, entries = ingest_ledger(prod, warm, cfg, cache)
    # h[1] was in production's test split, but the warm-start model validated on it: out of test
    assert {s: e.split for s, e in entries.items()} == {h[0]: "train", h[1]: "val", h[2]: "train"}
    assert info["warm_start"]["version"] == versions["warm"] and info["warm_start"]["ledger"]["sha256"]
    for same in (prod, {"reads_registry": False}):  # nothing more to keep: production's alone
        info, entries = ingest_ledger(prod, same, cfg, cache)
        assert "warm_start" not in info and {s: e.split for s, e in entries.items()} == {h[0]: "train", h[1]: "test"}
