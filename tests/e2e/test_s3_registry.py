"""The registry against a real S3 HTTP endpoint (moto server subprocess), and the same
behaviour on a local folder; includes the endpoint failing in the middle of a publish, and
writers racing on one alias (compare-and-swap: one wins, the other is told who)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

import boto3
import pytest

from tasks.registry import client as registry
from tasks.registry.client import RegistryError, S3Options

from .moto_s3 import FAKE_AWS, MotoServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    old = {k: os.environ.get(k) for k in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def options(server: MotoServer) -> S3Options:
    # Small timeouts and few attempts, so a dead endpoint fails in seconds, not minutes.
    return S3Options(endpoint_url=server.url, max_attempts=2, connect_timeout=1, read_timeout=2,
                     multipart_threshold_mb=5, multipart_chunk_mb=5)


def new_bucket(server: MotoServer) -> str:
    name = f"reg-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=name)
    return name


def make_files(root: Path, tag: str, model_mb: float = 0.01) -> Path:
    root.mkdir(parents=True)
    (root / "model.keras").write_bytes(tag.encode() * int(model_mb * (1 << 20)))
    (root / "saved_model").mkdir()
    (root / "saved_model" / "saved_model.pb").write_bytes(b"pb-" + tag.encode())
    for name in ("metadata.json", "thresholds.json", "metrics.json"):
        (root / name).write_text(json.dumps({"tag": tag, "map": 0.5}))
    (root / "model_card.md").write_text(f"# {tag}\n")
    return root


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "registry"), None
    server = request.getfixturevalue("s3")
    return f"s3://{new_bucket(server)}/models", options(server)


def test_same_behaviour_publish_noop_verify_promote_rollback(store_uri, tmp_path):
    uri, opts = store_uri
    store = registry.open_store(uri, opts)
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    puts: list[str] = []
    store.after_put = puts.append
    assert registry.publish_version(store, "m", make_files(tmp_path / "a2", "a")) == v1
    assert puts == []  # publishing the same content twice writes nothing
    assert registry.verify(store, "m", v1) == []
    v2 = registry.publish_version(store, "m", make_files(tmp_path / "b", "b"))
    registry.promote(store, "m", v1)
    registry.promote(store, "m", v2)
    assert registry.rollback(store, "m", "production").version == v1
    listed = {i.version: i for i in registry.list_versions(store, "m")}
    assert set(listed) == {v1, v2} and listed[v1].aliases == ["production"]
    cached = registry.resolve_model_dir(uri, "m", "production", tmp_path / "cache", opts)
    assert (cached / "saved_model" / "saved_model.pb").read_bytes() == b"pb-a"


def test_multipart_upload_verifies_and_tampering_is_found(s3, tmp_path):
    bucket = new_bucket(s3)
    store = registry.open_store(f"s3://{bucket}/models", options(s3))
    v = registry.publish_version(store, "m", make_files(tmp_path / "big", "x", model_mb=6))
    head = boto3.client("s3", endpoint_url=s3.url).head_object(Bucket=bucket, Key=f"models/m/{v}/model.keras")
    assert head["ETag"].strip('"').endswith("-2")  # really went up in two parts
    assert registry.verify(store, "m", v) == []
    boto3.client("s3", endpoint_url=s3.url).put_object(
        Bucket=bucket, Key=f"models/m/{v}/model_card.md", Body=b"# y\n")
    problems = registry.verify(store, "m", v)
    assert len(problems) == 1 and "model_card.md" in problems[0]
    with pytest.raises(RegistryError, match="refusing"):
        registry.promote(store, "m", v)


def test_endpoint_hanging_mid_publish_moves_no_alias_and_rerun_completes(s3, tmp_path):
    store = registry.open_store(f"s3://{new_bucket(s3)}/models", options(s3))
    v1 = registry.publish_version(store, "m", make_files(tmp_path / "a", "a"))
    registry.promote(store, "m", v1)
    files = make_files(tmp_path / "b", "b")
    store.after_put = lambda key: s3.pause()  # the endpoint stops after the first file
    try:
        with pytest.raises(RegistryError, match=r"interrupted .*no alias was moved.*s3://.*failed"):
            registry.publish_version(store, "m", files)
    finally:
        s3.resume()
    store.after_put = None
    assert registry.get_alias(store, "m", "production").version == v1
    v2 = registry.version_of(registry.build_manifest(files))
    assert "no MANIFEST.json" in registry.verify(store, "m", v2)[0]
    assert registry.resolve(store, "m", "production") == v1
    with pytest.raises(RegistryError):
        registry.promote(store, "m", v2)  # an incomplete version can never be aliased
    assert registry.publish_version(store, "m", files) == v2  # the re-run completes it
    record = registry.promote(store, "m", v2)
    assert (record.version, record.previous) == (v2, v1)


def test_endpoint_killed_mid_publish_then_restarted_publish_completes(s3, tmp_path):
    files = make_files(tmp_path / "a", "a")
    bucket = new_bucket(s3)
    store = registry.open_store(f"s3://{bucket}/models", options(s3))
    store.after_put = lambda key: s3.stop()
    try:
        with pytest.raises(RegistryError, match="failed"):
            registry.publish_version(store, "m", files)
    finally:
        s3.start()  # same port, empty state (moto keeps it in memory)
    boto3.client("s3", endpoint_url=s3.url).create_bucket(Bucket=bucket)
    store.after_put = None
    assert registry.get_alias(store, "m", "production") is None
    v = registry.publish_version(store, "m", files)
    registry.promote(store, "m", v)
    assert registry.resolve(store, "m", "production") == v and registry.verify(store, "m", v) == []


def race(uri: str, opts: S3Options | None, model: str, targets: list[str]) -> list[object]:
    """Promote each of ``targets`` from its own thread and client, all reading the alias before
    any writes (a barrier in front of the conditional write): a real lost-update race.

    Returns each writer's AliasRecord, or the AliasConflict it raised.
    """
    barrier = threading.Barrier(len(targets))
    results: list[object] = [None] * len(targets)

    def writer(i: int) -> None:
        store = registry.open_store(uri, opts)
        put_if = store.put_if

        def put_after_everyone_read(*args, **kw):
            barrier.wait(timeout=30)
            return put_if(*args, **kw)

        store.put_if = put_after_everyone_read
        try:
            results[i] = registry.promote(store, model, targets[i])
        except registry.AliasConflict as e:
            results[i] = e

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_promotes_one_wins_the_loser_is_told_who(store_uri, tmp_path):
    uri, opts = store_uri
    store = registry.open_store(uri, opts)
    v0, v1, v2 = (registry.publish_version(store, "m", make_files(tmp_path / t, t)) for t in ("z", "a", "b"))
    registry.promote(store, "m", v0)
    results = race(uri, opts, "m", [v1, v2])
    won = [r for r in results if isinstance(r, registry.AliasRecord)]
    lost = [r for r in results if isinstance(r, registry.AliasConflict)]
    assert len(won) == 1 and len(lost) == 1, results
    winner = won[0].version
    assert winner in str(lost[0]) and "not moved to" in str(lost[0]) and lost[0].winner.version == winner
    final = registry.get_alias(store, "m", "production")
    assert final.version == winner and final.previous == v0
    assert [h["version"] for h in final.history] == [v0, winner]  # the loser left no trace


def test_concurrent_first_writes_of_an_alias_one_wins(store_uri, tmp_path):
    uri, opts = store_uri
    store = registry.open_store(uri, opts)
    v1, v2 = (registry.publish_version(store, "m", make_files(tmp_path / t, t)) for t in ("a", "b"))
    results = race(uri, opts, "m", [v1, v2])
    won = [r for r in results if isinstance(r, registry.AliasRecord)]
    assert len(won) == 1, results
    final = registry.get_alias(store, "m", "production")
    assert final.previous is None and [h["version"] for h in final.history] == [won[0].version]


def test_rollback_racing_a_promote_is_refused_not_lost(store_uri, tmp_path):
    uri, opts = store_uri
    store = registry.open_store(uri, opts)
    v1, v2, v3 = (registry.publish_version(store, "m", make_files(tmp_path / t, t)) for t in ("a", "b", "c"))
    registry.promote(store, "m", v1)
    registry.promote(store, "m", v2)
    stale = registry.get_alias(store, "m", "production")
    registry.promote(registry.open_store(uri, opts), "m", v3)  # someone else, meanwhile
    with pytest.raises(registry.AliasConflict, match=f"no longer points at {v2}.*now points at {v3}"):
        registry.set_alias(store, "m", "production", stale.previous, expected=stale.version, via="rollback")
    assert registry.get_alias(store, "m", "production").version == v3
