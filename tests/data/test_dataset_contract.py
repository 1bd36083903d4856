"""Data contracts of artifacts/dataset: schema, label set, disjoint splits, counts that add up."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tasks.ingest import run
from tests.data import corpus


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    corpus.all_formats(root, n=40)
    out = root / "out"
    run(corpus.cfg(root, test_fraction=0.2, val_fraction=0.2), out)
    return out


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_has_the_contract_columns_sorted_by_id(dataset):
    rows = _manifest(dataset)
    assert list(rows[0]) == ["id", "path", "sha256", "labels", "split"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(r["path"].startswith("JPEGImages/") and len(r["sha256"]) == 64 for r in rows)
    assert all((dataset.parent / r["path"]).is_file() for r in rows)


def test_labels_are_names_from_classes_json(dataset):
    classes = json.loads((dataset / "classes.json").read_text())["classes"]
    assert classes == corpus.CLASSES
    used = {name for r in _manifest(dataset) for name in r["labels"].split(";") if name}
    assert used == set(classes)


def test_no_id_path_or_content_appears_twice(dataset):
    rows = _manifest(dataset)
    for key in ("id", "path", "sha256"):
        assert len({r[key] for r in rows}) == len(rows), key


def test_splits_are_valid_and_every_label_is_in_every_split(dataset):
    rows = _manifest(dataset)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        present = {n for r in rows if r["split"] == split for n in r["labels"].split(";")}
        assert present == set(corpus.CLASSES), split  # "rare" has 4 images: one per split at least


def test_counts_add_up(dataset):
    stats = json.loads((dataset / "stats.json").read_text())
    rows = _manifest(dataset)
    with open(dataset / "quarantine.csv", newline="") as f:
        quarantined = list(csv.DictReader(f))
    assert stats["rows_read"] == 40 == stats["kept"] + stats["quarantined"]
    assert stats["kept"] == len(rows) and stats["quarantined"] == len(quarantined) == 0
    assert sum(stats["counts"].values()) == len(rows)
    for split, per_class in stats["per_class"].items():
        for name, n in per_class.items():
            assert n == sum(1 for r in rows if r["split"] == split and name in r["labels"].split(";"))
    n_labels = sum(len(r["labels"].split(";")) for r in rows)
    assert stats["cardinality"]["all"] == pytest.approx(n_labels / len(rows), abs=1e-4)


def test_user_test_list_is_honoured_and_val_carved_from_train(tmp_path):
    rows = corpus.all_formats(tmp_path, n=40, test_every=4)
    out = tmp_path / "out"
    stats = run(corpus.cfg(tmp_path, test_list="test.txt"), out).stats
    wanted = {f"JPEGImages/{f}" for i, (f, _) in enumerate(rows) if i % 4 == 0}
    got = {r["path"] for r in _manifest(out) if r["split"] == "test"}
    assert got == wanted and stats["test_list"]["unmatched"] == 0
    assert stats["counts"]["val"] > 0 and stats["counts"]["train"] > stats["counts"]["val"]


def test_cooccurrence_plot_is_a_png(dataset):
    assert (dataset / "cooccurrence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
