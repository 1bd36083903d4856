"""The same images and labels as manifest, COCO or VOC give the same dataset, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.ingest import run
from tests.data import corpus

FILES = ("manifest.csv", "classes.json", "stats.json", "quarantine.csv", "cooccurrence.png")


def _outputs(out: Path, skip_stats: bool = False) -> dict[str, bytes]:
    # stats.json names the source and how the test split was given: compare the rest.
    files = {f: (out / f).read_bytes() for f in FILES}
    if skip_stats:
        stats = json.loads(files["stats.json"])
        files["stats.json"] = json.dumps({k: v for k, v in stats.items() if k not in ("source", "test_list")}).encode()
    return files


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("equiv")
    corpus.all_formats(root, n=40, test_every=5)
    corpus.write_manifest(root, corpus.items(40), by="name", sep=",", label_sep=";", name="labels_by_name.csv")
    return root


SOURCES = {
    "manifest_tsv_index": dict(source="manifest", test_list="test.txt"),
    "manifest_csv_names": dict(source="manifest", labels="labels_by_name.csv", test_list="test.txt"),
    "coco_mapped": dict(source="coco", coco_mapping=corpus.coco_mapping(), test_list="test.txt"),
    "voc": dict(source="voc", voc_difficult="skip"),  # test split from ImageSets/Main/test.txt
}


@pytest.fixture(scope="module")
def outputs(root) -> dict[str, dict[str, bytes]]:
    return {name: _outputs(run(corpus.cfg(root, **kw), root / name).out_dir, True) for name, kw in SOURCES.items()}


@pytest.mark.parametrize("name", [n for n in SOURCES if n != "manifest_tsv_index"])
def test_source_gives_the_same_dataset_as_the_tsv_manifest(outputs, name):
    for f in FILES:
        assert outputs[name][f] == outputs["manifest_tsv_index"][f], f


def test_voc_difficult_objects_count_only_when_included(root):
    skip = run(corpus.cfg(root, source="voc"), root / "voc_skip").stats
    include = run(corpus.cfg(root, source="voc", voc_difficult="include"), root / "voc_incl").stats
    dogs = lambda s: sum(s["per_class"][k]["dog"] for k in ("train", "val", "test"))  # noqa: E731
    assert dogs(include) > dogs(skip)


def test_rerun_is_byte_identical_and_independent_of_workers(root):
    cfg = dict(source="manifest", test_list="test.txt")
    a = _outputs(run(corpus.cfg(root, workers=1, **cfg), root / "a").out_dir)
    b = _outputs(run(corpus.cfg(root, workers=2, **cfg), root / "b").out_dir)
    assert a == b


def test_a_different_seed_gives_different_splits(root):
    a = run(corpus.cfg(root, seed=1), root / "s1").out_dir / "manifest.csv"
    b = run(corpus.cfg(root, seed=2), root / "s2").out_dir / "manifest.csv"
    assert a.read_bytes() != b.read_bytes()
