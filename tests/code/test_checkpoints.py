"""Shared checkpoints (tasks/model/checkpoints.py): an epoch is trusted only through a manifest whose
files verify; older epochs and finished runs are cleaned up; the store setting is validated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.bridge import stages
from tasks.common.files import sha256_file
from tasks.model import checkpoints as C
from tasks.registry.stores import LocalStore


def epoch_dir(root: Path, epoch: int) -> Path:
    d = root / f"epoch-{epoch:04d}"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"epoch": epoch}))
    (d / "variables.npz").write_bytes(bytes([epoch]) * 1000)
    return d


@pytest.fixture()
def remote(tmp_path):
    return C.RemoteCheckpoints(LocalStore(tmp_path / "store"), "train_full", "abc123")


def test_a_pushed_epoch_is_pulled_into_a_fresh_folder_byte_for_byte(remote, tmp_path):
    src = epoch_dir(tmp_path / "a", 3)
    remote.push(src, 3)
    assert remote.pull_latest(tmp_path / "b") == 3
    for f in src.iterdir():
        assert (tmp_path / "b/epoch-0003" / f.name).read_bytes() == f.read_bytes()
    assert not list((tmp_path / "b").glob("download-*"))


def test_a_new_epoch_replaces_the_older_one(remote, tmp_path):
    remote.push(epoch_dir(tmp_path / "a", 1), 1)
    remote.push(epoch_dir(tmp_path / "b", 2), 2)
    keys = remote.store.list_keys(remote.prefix)
    assert keys and all("/epoch-0002/" in k for k in keys)
    assert remote.pull_latest(tmp_path / "c", newer_than=2) is None  # nothing newer than local


def write_unfinished(remote, tmp_path, epoch: int, *, manifest: bool) -> str:
    """Epoch ``epoch``'s files in the store as a cut-off writer leaves them (older epoch kept)."""
    base = f"{remote.prefix}/epoch-{epoch:04d}"
    src = epoch_dir(tmp_path / f"w{epoch}", epoch)
    files = {}
    for f in src.iterdir():
        remote.store.put_file(f, f"{base}/{f.name}", sha256_file(f))
        files[f.name] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    if manifest:
        remote.store.put_bytes(f"{base}/{C.MANIFEST}", json.dumps({"epoch": epoch, "files": files}).encode())
    return base


def test_files_without_a_manifest_are_never_read(remote, tmp_path):
    remote.push(epoch_dir(tmp_path / "a", 1), 1)
    write_unfinished(remote, tmp_path, 2, manifest=False)
    assert remote.pull_latest(tmp_path / "c") == 1


def test_a_manifest_whose_file_is_missing_is_ignored(remote, tmp_path):
    remote.push(epoch_dir(tmp_path / "a", 1), 1)
    base = write_unfinished(remote, tmp_path, 2, manifest=True)
    remote.store.delete([f"{base}/variables.npz"])
    assert remote.pull_latest(tmp_path / "c") == 1
    assert not (tmp_path / "c/epoch-0002").exists()


def test_a_manifest_whose_file_is_corrupt_is_ignored(remote, tmp_path):
    remote.push(epoch_dir(tmp_path / "a", 1), 1)
    base = write_unfinished(remote, tmp_path, 2, manifest=True)
    remote.store.put_bytes(f"{base}/variables.npz", b"truncated")
    assert remote.pull_latest(tmp_path / "c") == 1
    assert (tmp_path / "c/epoch-0001/variables.npz").read_bytes() == bytes([1]) * 1000


def test_an_unreadable_manifest_is_ignored(remote, tmp_path):
    base = write_unfinished(remote, tmp_path, 4, manifest=False)
    remote.store.put_bytes(f"{base}/{C.MANIFEST}", b'{"epoch": 4, "fi')
    assert remote.pull_latest(tmp_path / "c") is None


def test_delete_all_removes_the_run_and_only_it(tmp_path):
    store = LocalStore(tmp_path / "store")
    mine, other = C.RemoteCheckpoints(store, "train_full", "aaa"), C.RemoteCheckpoints(store, "train_full", "bbb")
    mine.push(epoch_dir(tmp_path / "a", 1), 1)
    other.push(epoch_dir(tmp_path / "b", 1), 1)
    mine.delete_all()
    assert store.list_keys(mine.prefix) == [] and store.list_keys(other.prefix)


@pytest.mark.parametrize("value, error", [
    ("s3://", "no bucket"), ("gs://bucket/x", "only s3://"), ("relative/dir", "absolute path")])
def test_bad_store_settings_are_errors_naming_the_setting(value, error, monkeypatch):
    monkeypatch.setenv(C.ENV_STORE, value)
    with pytest.raises(C.CheckpointConfigError, match=f"{C.ENV_STORE}=.*{error}"):
        C.configured_location()


def test_store_comes_from_the_setting_else_the_dvc_remote_else_nowhere(tmp_path, monkeypatch):
    monkeypatch.delenv(C.ENV_STORE, raising=False)
    assert C.configured_location(tmp_path) is None  # not a DVC repository
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text(
        "[core]\n    remote = store\n['remote \"store\"']\n    url = s3://bucket/tagsmith/dvc/\n"
        "    endpointurl = http://127.0.0.1:9\n")
    url, options = C.configured_location(tmp_path)
    assert url == "s3://bucket/tagsmith/dvc/tagsmith-checkpoints"
    assert options.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv(C.ENV_STORE, "s3://other/ckpt/")
    assert C.configured_location(tmp_path)[0] == "s3://other/ckpt"
    monkeypatch.setenv(C.ENV_STORE, "off")
    assert C.configured_location(tmp_path) is None
    monkeypatch.delenv(C.ENV_STORE)
    (tmp_path / ".dvc/config").write_text("[core]\n    remote = nas\n['remote \"nas\"']\n    url = /mnt/nas/dvc\n")
    assert C.configured_location(tmp_path) is None  # only an S3 remote is reachable from another machine


def test_a_fingerprint_is_used_only_by_the_stage_it_was_given_for(monkeypatch):
    assert (stages.STAGE_ENV, stages.FINGERPRINT_ENV) == (C.ENV_STAGE, C.ENV_FINGERPRINT)
    monkeypatch.setenv(C.ENV_STAGE, "train_full")
    monkeypatch.setenv(C.ENV_FINGERPRINT, "f00d")
    assert C.stage_fingerprint("train_full") == "f00d"
    assert C.stage_fingerprint("train_frozen") is None
    with pytest.raises(C.CheckpointConfigError):
        C.RemoteCheckpoints(LocalStore(Path("/nonexistent")), "train_full", "../x")


def test_the_flow_passes_the_stage_its_dvc_fingerprint(tmp_path, monkeypatch):
    """stages.repro runs the stage with TAGSMITH_STAGE/TAGSMITH_STAGE_FINGERPRINT = DVC's key."""
    monkeypatch.chdir(tmp_path)  # as the flow runs: in its workspace
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "in.txt").write_text("x\n")
    cmd = "python -c \"import os; open('out.txt', 'w').write(os.environ['TAGSMITH_STAGE'] + ' ' + os.environ['TAGSMITH_STAGE_FINGERPRINT'])\""
    spec = {"stages": {"s": {"cmd": cmd, "deps": ["in.txt"], "outs": ["out.txt"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    run = stages.repro(tmp_path, "s", log=lambda _: None)
    assert run.outcome == "ran"
    assert (tmp_path / "out.txt").read_text() == f"s {run.fingerprint}"
