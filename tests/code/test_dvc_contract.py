"""The fingerprint rests on DVC's private run-cache key (dvc.stage.cache._get_stage_hash).

If a DVC release changes that function or the key it computes, these tests fail with a message
that says so, instead of Prefect's cache silently disagreeing with DVC's.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.bridge import stages

CONTRACT = ("DVC's private run-cache API changed (flows/bridge/stages.py:_stage_hash uses "
            "dvc.stage.cache._get_stage_hash); re-check the fingerprint before moving the dvc pin")


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    """A DVC repository (no git) with one stage that reads a file and a param, run once."""
    root = tmp_path_factory.mktemp("dvc-contract")
    env = stages.dvc_env()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    (root / "input.txt").write_text("hello\n")
    (root / "params.yaml").write_text("make:\n  times: 3\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {
        "cmd": "python -c \"open('out.txt','w').write(open('input.txt').read()*3)\"",
        "deps": ["input.txt"], "params": ["make.times"], "outs": ["out.txt"]}}}))
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=env, check=True)
    return root


def _strip(obj, drop=("size", "nfiles")):
    if isinstance(obj, dict):
        return {k: _strip(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_strip(v, drop) for v in obj]
    return obj


def test_private_api_still_exists():
    try:
        from dvc.stage.cache import _can_hash, _get_stage_hash  # noqa: F401
    except ImportError as e:
        pytest.fail(f"{CONTRACT}: {e}")


def test_fingerprint_is_the_run_cache_key_dvc_wrote(tiny_repo):
    key = stages.fingerprint(tiny_repo, "make")
    runs = tiny_repo / ".dvc" / "cache" / "runs"
    written = sorted(p.name for p in runs.glob("*/*")) if runs.exists() else []
    assert written == [key], f"{CONTRACT}: run-cache holds {written}, fingerprint is {key}"


def test_fingerprint_is_the_hash_of_the_dvc_lock_entry(tiny_repo):
    entry = yaml.safe_load((tiny_repo / "dvc.lock").read_text())["stages"]["make"]
    entry = _strip({**entry, "outs": [o["path"] for o in entry["outs"]]})
    expected = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    assert stages.fingerprint(tiny_repo, "make") == expected, CONTRACT


def test_fingerprint_follows_a_param(tiny_repo, tmp_path):
    before = stages.fingerprint(tiny_repo, "make")
    (tiny_repo / "params.yaml").write_text("make:\n  times: 4\n")
    try:
        assert stages.fingerprint(tiny_repo, "make") != before
    finally:
        (tiny_repo / "params.yaml").write_text("make:\n  times: 3\n")
    assert stages.fingerprint(tiny_repo, "make") == before
    assert os.path.exists(tiny_repo / "out.txt")


def test_stages_resolve_against_the_workspace_not_the_cwd(tiny_repo, tmp_path, monkeypatch):
    (tiny_repo / "extra.txt").write_text("x\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "extra.txt"], cwd=tiny_repo,
                   env=stages.dvc_env(), check=True)
    monkeypatch.chdir(tmp_path)  # elsewhere: a bare name would be looked up here
    assert stages.is_current(tiny_repo, "make")
    assert stages.is_current(tiny_repo, "extra.txt.dvc")
