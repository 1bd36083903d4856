"""`tagsmith data track` / `update` with real dvc against S3 (moto over HTTP): one import per
slice, ingest reads the imported slices, and an update imports only the new slice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from PIL import Image

from tasks.datasource.store import open_source
from tasks.datasource.slices import add_slice

from .conftest import run
from .moto_s3 import FAKE_AWS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3(moto_s3):
    return moto_s3  # the session's endpoint; this module's buckets are its own


def _slices_from_synth(data: Path, out: Path, parts: int) -> list[tuple[Path, Path]]:
    """The tiny synthetic dataset cut into ``parts`` batches of (folder, labels by name)."""
    classes = (data / "classes.txt").read_text().split()
    rows = [ln.split("\t") for ln in (data / "labels.tsv").read_text().splitlines()[1:] if ln.strip()]  # header
    batches = []
    for i in range(parts):
        folder = out / f"batch{i}"
        folder.mkdir(parents=True)
        lines = []
        for name, labels in rows[i::parts]:
            (folder / name).write_bytes((data / "images" / name).read_bytes())
            lines.append(f"{name}\t{','.join(classes[int(x)] for x in labels.split(','))}\n")
        (out / f"labels{i}.tsv").write_text("".join(lines))
        batches.append((folder, out / f"labels{i}.tsv"))
    return batches


def test_track_imports_each_slice_and_update_fetches_only_new_ones(s3, tiny_repo_factory, tmp_path, monkeypatch):
    repo = tiny_repo_factory("track")
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": s3.url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3.url).create_bucket(Bucket=bucket)
    source = f"s3://{bucket}/dataset"
    store = open_source(source)
    batches = _slices_from_synth(repo / "data", tmp_path, 3)
    add_slice(store, *batches[0], classes_file=repo / "data" / "classes.txt")
    add_slice(store, *batches[1])

    cli = [sys.executable, "-m", "flows.cli", "data"]
    refused = subprocess.run(cli + ["track", source], cwd=repo, env={**os.environ, **env}, capture_output=True, text=True)
    assert refused.returncode == 1 and "pass --replace" in refused.stderr  # data.dvc is in the way
    run(cli + ["track", source, "--replace"], repo, env=env)
    assert not (repo / "data.dvc").exists()
    assert sorted(p.name for p in (repo / "data/slices").glob("*.dvc")) == ["s0001.dvc", "s0002.dvc"]
    first = {p: p.read_text() for p in (repo / "data/slices").glob("*.dvc")}
    dep = yaml.safe_load(first[repo / "data/slices/s0001.dvc"])["deps"][0]
    assert dep["path"] == f"{source}/slices/s0001"  # the .dvc file records the source and version
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "-A"], repo)
    assert "data/slices/s0001.dvc" in run(["git", "status", "--porcelain"], repo).stdout  # committable
    run(git + ["commit", "-qm", "follow the source"], repo)

    run([sys.executable, "-m", "dvc", "repro", "ingest"], repo, env=env)  # the pipeline reads the slices
    manifest = (repo / "artifacts/dataset/manifest.csv").read_text()
    assert "slices/s0001/images/" in manifest and "slices/s0002/images/" in manifest

    add_slice(store, *batches[2])
    before = {p: p.stat().st_mtime_ns for p in (repo / "data/slices/s0001").rglob("*") if p.is_file()}
    out = run(cli + ["update"], repo, env=env)
    assert "1 new slice(s): s0003" in out.stdout
    assert {p: p.read_text() for p in first} == first  # old slices' versions untouched
    assert {p: p.stat().st_mtime_ns for p in before} == before  # and not fetched again
    status = run([sys.executable, "-m", "dvc", "status", "ingest"], repo, env=env).stdout
    assert "changed deps" in status and "data" in status  # the new slice makes ingest stale
    assert "0 new slice(s)" in run(cli + ["update"], repo, env=env).stdout

    # a deployment's workspace (a clone of the commit) gets the imported slices too
    from flows.deployment.deploy import prepare_workspace

    run(git + ["add", "-A"], repo)
    run(git + ["commit", "-qm", "slice s0003"], repo)
    monkeypatch.chdir(tmp_path)
    prepare_workspace(repository=str(repo), commit=run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), directory="ws")
    assert (tmp_path / "ws/data/slices/s0003/labels.tsv").read_bytes() == (repo / "data/slices/s0003/labels.tsv").read_bytes()
    assert (tmp_path / "ws/data/classes.txt").is_file()

    # a run in that workspace brings the data up to date first (the flow's sync_data_source)
    from flows.bridge.stages import sync_data_source

    folder, labels = tmp_path / "late", tmp_path / "late.tsv"
    folder.mkdir()
    cls = (repo / "data/classes.txt").read_text().split()[0]
    for j, colour in enumerate([(10, 20, 30), (200, 100, 0)]):
        Image.new("RGB", (24, 24), colour).save(folder / f"late{j}.jpg")
    labels.write_text(f"late0.jpg\t{cls}\nlate1.jpg\t{cls}\n")
    add_slice(store, folder, labels)
    assert sync_data_source(tmp_path / "ws", log=lambda _: None)
    assert (tmp_path / "ws/data/slices/s0004/images/late1.jpg").is_file()
    assert not sync_data_source(tmp_path / "ws", log=lambda _: None)  # nothing new: nothing done
