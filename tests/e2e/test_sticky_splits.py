"""Splits that never move, with real dvc and git, across three data versions of the tiny set.

Each version is made the way the README says: change data/, `dvc add data`, `dvc repro
ingest`, `tagsmith splits record`, commit data.dvc with data.splits.tsv (dvc.lock stays
uncommitted, as in the project). v2 is the synthetic slice v2; v3 adds a re-encoded copy of a
v1 training image (which the user's test list names), a slightly resized copy of another, and
40 new images.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.bridge.overrides import apply_overrides
from tasks.splits import ledger
from tasks.demo import synth

from .conftest import make_tiny_repo, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # ~90 s idle on 2 cores (5 min at load 9)
VAL_SHARE, VAL_TOLERANCE = 0.15, 0.12  # per label with >= 15 non-test images; 162 images in all
NEAR = 4  # params.yaml ingest.near_duplicate_distance


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], repo)


def git(repo: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], repo).stdout.strip()


def manifest(repo: Path) -> dict[str, dict[str, str]]:
    """Rows of artifacts/dataset/manifest.csv by id."""
    with open(repo / "artifacts/dataset/manifest.csv", newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def new_version(repo: Path, message: str) -> dict[str, dict[str, str]]:
    dvc(repo, "add", "-q", "data")
    dvc(repo, "repro", "ingest")
    run([sys.executable, "-m", "flows.cli", "splits", "record"], repo)
    git(repo, "add", "data.dvc", "data.splits.tsv")
    git(repo, "commit", "-qm", message)
    return manifest(repo)


def _append(data: Path, rows: list[tuple[str, str]], test: list[str]) -> None:
    with open(data / "labels.tsv", "a") as f:
        f.writelines(f"{name}\t{labels}\n" for name, labels in rows)
    with open(data / "test.txt", "a") as f:
        f.writelines(f"{name}\n" for name in test)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    repo = make_tiny_repo(tmp_path_factory.mktemp("sticky") / "repo")
    apply_overrides(repo / "params.yaml", {"ingest.workers": 1})  # 162 images: a pool costs more than it saves
    git(repo, "commit", "-qam", "one ingest worker")
    v1 = new_version(repo, "data v1")
    synth.generate(repo / "data", preset="tiny", slice="v2", workers=1)
    v2 = new_version(repo, "data v2")

    data = repo / "data"
    train = sorted(i for i, r in v1.items() if r["split"] == "train")
    a, b = v1[train[0]], v1[train[1]]
    labels = {r[0]: r[1] for r in csv.reader(open(data / "labels.tsv"), delimiter="\t")}
    buf = io.BytesIO()
    Image.open(data / a["path"]).save(buf, "JPEG", quality=60)
    (data / "images/dup_reencoded.jpg").write_bytes(buf.getvalue())
    img = Image.open(data / b["path"])
    img.resize((img.width * 11 // 12, img.height * 11 // 12), Image.Resampling.BICUBIC).save(
        data / "images/dup_resized.jpg", quality=90)
    extra = tmp_path_factory.mktemp("extra")
    synth.generate(extra, preset="tiny", seed=5, workers=1)
    rows = [("dup_reencoded.jpg", labels[Path(a["path"]).name]), ("dup_resized.jpg", labels[Path(b["path"]).name])]
    fresh = sorted(p.name for p in (extra / "images").glob("*.jpg"))[:40]
    fresh_labels = {r[0]: r[1] for r in csv.reader(open(extra / "labels.tsv"), delimiter="\t")}
    for name in fresh:
        shutil.copy2(extra / "images" / name, data / "images" / f"s5_{name}")
        rows.append((f"s5_{name}", fresh_labels[name]))
    _append(data, rows, ["dup_reencoded.jpg"] + [f"s5_{n}" for n in fresh[::4]])

    dvc(repo, "add", "-q", "data")
    stale = subprocess.run([sys.executable, "-m", "flows.cli", "splits", "record"], cwd=repo,
                           capture_output=True, text=True)
    v3 = new_version(repo, "data v3")
    return repo, [v1, v2, v3], (a["id"], b["id"]), stale


def test_every_version_is_a_new_data_version(history):
    _, (v1, v2, v3), _, _ = history
    assert len(v1) < len(v2) < len(v3) and set(v1) <= set(v2) <= set(v3)


def test_no_image_changes_split(history):
    _, versions, _, _ = history
    for earlier, later in zip(versions, versions[1:]):
        by_sha = {r["sha256"]: r["split"] for r in later.values()}
        assert {r["sha256"]: r["split"] for r in earlier.values()} == {r["sha256"]: by_sha[r["sha256"]] for r in earlier.values()}


def test_copies_of_training_images_land_in_train_though_the_test_list_names_one(history):
    repo, (_, _, v3), (a, b), _ = history
    assert v3["dup_reencoded"]["split"] == "train" and v3["dup_resized"]["split"] == "train"
    stats = json.loads((repo / "artifacts/dataset/stats.json").read_text())
    assert "dup_reencoded" in stats["test_list"]["kept_out_of_test_examples"]
    groups = stats["near_duplicates"]["examples"]
    assert sorted([a, "dup_reencoded"]) in groups and sorted([b, "dup_resized"]) in groups


def test_no_earlier_train_or_val_image_or_near_copy_in_a_later_test_split(history):
    repo, (v1, v2, v3), _, _ = history
    recorded = ledger.read(repo / "data.splits.tsv")
    seen = {r["sha256"] for v in (v1, v2) for r in v.values() if r["split"] in ("train", "val")}
    earlier = np.array([int(recorded[h].phash, 16) for h in sorted(seen)], dtype=np.uint64)
    for r in v3.values():
        if r["split"] == "test":
            assert r["sha256"] not in seen
            dist = np.bitwise_count(earlier ^ np.uint64(int(recorded[r["sha256"]].phash, 16)))
            assert dist.min() > NEAR, r["id"]


def test_each_labels_validation_share_stays_near_the_target(history):
    repo, (_, _, v3), _, _ = history
    classes = json.loads((repo / "artifacts/dataset/classes.json").read_text())["classes"]
    checked = 0
    for c in classes:
        rows = [r for r in v3.values() if c in r["labels"].split(";") and r["split"] != "test"]
        if len(rows) >= 15:
            share = sum(r["split"] == "val" for r in rows) / len(rows)
            assert abs(share - VAL_SHARE) <= VAL_TOLERANCE, (c, share, len(rows))
            checked += 1
    assert checked >= 4


def test_record_refuses_before_ingest_has_seen_the_new_data(history):
    _, _, _, stale = history
    assert stale.returncode != 0 and "dvc repro ingest" in stale.stderr


def test_recording_the_ledger_changes_no_dataset_output(history):
    repo, _, _, _ = history
    before = {p.name: p.read_bytes() for p in (repo / "artifacts/dataset").iterdir()}
    assert "Running stage 'ingest'" in dvc(repo, "repro", "ingest").stdout  # the ledger dep changed
    assert {p.name: p.read_bytes() for p in (repo / "artifacts/dataset").iterdir()} == before
    assert (repo / "artifacts/splits/ledger.tsv").read_text() == (repo / "data.splits.tsv").read_text()


def test_a_fresh_clone_and_a_fresh_worker_see_the_same_assignment(history, tmp_path):
    repo, _, _, _ = history
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "--local", "-d", "store", str(remote))
    dvc(repo, "push", "-q", "--run-cache")
    expected = (repo / "artifacts/dataset/manifest.csv").read_bytes()
    for name, restore in (("clone", ["repro", "ingest"]), ("worker", ["repro", "--pull", "ingest"])):
        clone = tmp_path / name
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
        assert not (clone / "dvc.lock").exists() and not (clone / "artifacts").exists()
        dvc(clone, "remote", "add", "--local", "-d", "store", str(remote))
        dvc(clone, "pull", "-q", "data.dvc")
        out = dvc(clone, *restore).stdout
        # the clone computes it from data + ledger; the worker restores it from the run-cache
        assert ("Running stage 'ingest'" in out) == (name == "clone"), out
        assert (clone / "artifacts/dataset/manifest.csv").read_bytes() == expected
