"""The memo (tasks/dataset/memo.py) only skips work: ingest's and augment's outputs are the same
bytes with it cold, warm and disabled; another recipe or a corrupt pack is never used; adding a
slice encodes only that slice's images while index.json still covers all of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import augment, ingest
from tasks.common.config import AugmentConfig, IngestConfig
from tasks.dataset.memo import Memo

CLASSES = ["cat", "dog", "bird"]


def add_slice(root: Path, slice_id: str, first: int, n: int) -> None:
    """A complete slice of ``n`` distinct noise images, as `tagsmith data add` lays it out."""
    folder = root / "slices" / slice_id
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(first)
    rows = []
    for i in range(first, first + n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(folder / "images" / f"{i:04d}.jpg")
        rows.append(f"{i:04d}.jpg\t{CLASSES[i % 3]},{CLASSES[(i + 1) % 3]}\n")
    (folder / "labels.tsv").write_text("".join(rows))
    (folder / "MANIFEST.json").write_text("{}")
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    add_slice(root, "s0001", 0, 20)
    return root


def icfg(root: Path, **kw) -> IngestConfig:
    return IngestConfig(**{"source": "sliced", "root": str(root), "test_list": None, "splits_ledger": None,
                           "workers": 1, **kw})


def run_ingest(root: Path, out: Path, memo: Memo | None, **kw) -> dict[str, bytes]:
    ingest.run(icfg(root, **kw), out_dir=out / "dataset", splits_dir=out / "splits", production_ledger=None, memo=memo)
    return outputs(out)


def counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_ingest_outputs_are_the_same_cold_warm_and_disabled_and_warm_decodes_nothing(source, tmp_path, monkeypatch):
    memo = Memo(str(tmp_path / "memo"))
    probes = counting(monkeypatch, ingest, "probe")
    off = run_ingest(source, tmp_path / "off", None)
    cold = run_ingest(source, tmp_path / "cold", memo)
    assert len(probes) == 40  # 20 without the memo, 20 to fill it
    warm = run_ingest(source, tmp_path / "warm", memo)
    assert len(probes) == 40  # every image found by its sha256
    assert off == cold == warm and "dataset/manifest.csv" in off
    other = run_ingest(source, tmp_path / "other", memo, max_side=10_000)  # another recipe: not used
    assert len(probes) == 60 and other == off


def test_a_corrupt_pack_is_ignored_with_a_warning(source, tmp_path, monkeypatch, capsys):
    memo = Memo(str(tmp_path / "memo"))
    clean = run_ingest(source, tmp_path / "cold", memo)
    (pack,) = (tmp_path / "memo").rglob("*.tsv")
    lines = pack.read_text().splitlines()
    pack.write_text("\n".join(lines[:1] + [ln[:-1] + "0" for ln in lines[1:]]) + "\n")  # wrong phashes
    probes = counting(monkeypatch, ingest, "probe")
    assert run_ingest(source, tmp_path / "again", memo) == clean
    assert len(probes) == 20 and "ignored" in capsys.readouterr().err


def acfg(**kw) -> AugmentConfig:
    return AugmentConfig(image_size=32, shard_mb=1, workers=1, preview_images=2, preview_draws=1, **kw)


def run_augment(source: Path, work: Path, memo: Memo | None, ledger: Path | None = None, **kw) -> dict[str, bytes]:
    ingest.run(icfg(source, splits_ledger=str(ledger) if ledger else None), out_dir=work / "dataset", splits_dir=work / "splits", production_ledger=None)
    augment.run(acfg(**kw), data_root=source, dataset_dir=work / "dataset", out_dir=work / "shards", memo=memo)
    return outputs(work / "shards")


def test_augment_outputs_are_the_same_cold_warm_and_disabled_and_a_new_slice_encodes_only_itself(
        source, tmp_path, monkeypatch):
    memo = Memo(str(tmp_path / "memo"))
    encodes = counting(monkeypatch, augment, "encode")
    off = run_augment(source, tmp_path / "off", None)
    cold = run_augment(source, tmp_path / "cold", memo)
    warm = run_augment(source, tmp_path / "warm", memo)
    assert len(encodes) == 40 and off == cold == warm
    assert len(run_augment(source, tmp_path / "q", memo, jpeg_quality=80)) and len(encodes) == 60  # other recipe

    add_slice(source, "s0002", 20, 7)
    ledger = tmp_path / "splits.tsv"  # recorded splits never move (`tagsmith splits record`)
    ledger.write_bytes((tmp_path / "warm" / "splits" / "ledger.tsv").read_bytes())
    grown_off = run_augment(source, tmp_path / "grown-off", None, ledger)
    assert len(encodes) == 87
    grown = run_augment(source, tmp_path / "warm", memo, ledger)  # the workspace of the warm run, grown
    assert len(encodes) == 94 and grown == grown_off  # only the 7 new images were encoded
    index = json.loads(grown["index.json"])
    assert sum(s["count"] for s in index["splits"].values()) == 27
    assert any("-s0001-" in f for f in index["splits"]["train"]["files"])
    assert any("-s0002-" in f for s in index["splits"].values() for f in s["files"])


def test_a_memo_blob_that_no_longer_matches_is_recomputed(source, tmp_path, monkeypatch, capsys):
    memo = Memo(str(tmp_path / "memo"))
    clean = run_augment(source, tmp_path / "cold", memo)
    shard = next((tmp_path / "memo").rglob("*.tfrecord"))
    shard.unlink()
    shard.write_bytes(b"not a shard")  # a new file, so the cold workspace's link keeps its bytes
    encodes = counting(monkeypatch, augment, "encode")
    assert run_augment(source, tmp_path / "again", memo) == clean
    assert 0 < len(encodes) < 20 and "ignored" in capsys.readouterr().err


def test_a_memo_on_s3_is_shared_by_fresh_workers(moto_s3, tmp_path, monkeypatch):
    import boto3

    from tests.e2e.moto_s3 import FAKE_AWS

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=moto_s3.url).create_bucket(Bucket="memo-test")
    one, two = Memo("s3://memo-test/memo", moto_s3.url), Memo("s3://memo-test/memo", moto_s3.url)
    one.add("probe-x", {"a" * 64: "00ff00ff00ff00ff"})
    two.add("probe-x", {"b" * 64: "1111111111111111"})  # a second writer: its own pack
    assert one.load("probe-x") == {"a" * 64: "00ff00ff00ff00ff", "b" * 64: "1111111111111111"}
    assert one.load("probe-y") == {}
    shard = tmp_path / "train-00000-of-00001.tfrecord"
    shard.write_bytes(b"records")
    one.put_files("shards-k", [shard], {"count": 1, "skipped": []})
    (tmp_path / "fresh").mkdir()
    meta = two.get_files("shards-k", tmp_path / "fresh")
    assert meta["count"] == 1 and (tmp_path / "fresh" / shard.name).read_bytes() == b"records"
    assert two.get_files("shards-other", tmp_path / "fresh") is None


def test_an_unusable_memo_location_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    from tasks.common.config import ConfigError
    from tasks.dataset.memo import open_memo

    monkeypatch.setenv("TAGSMITH_MEMO", "nosuch://bucket/memo")
    with pytest.raises(ConfigError, match="TAGSMITH_MEMO = 'nosuch://bucket/memo'"):
        open_memo(tmp_path / "params.yaml")
    monkeypatch.delenv("TAGSMITH_MEMO")
    (tmp_path / "params.yaml").write_text("memo:\n  location: nosuch://bucket/memo\n")
    with pytest.raises(ConfigError, match="memo.location"):
        open_memo(tmp_path / "params.yaml")
