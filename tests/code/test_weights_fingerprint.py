"""The exact ImageNet weights are part of train_frozen's fingerprint (DVC's run-cache key).

The weights a stage can load are pinned by the backbone registry's known file name and hash
(tasks/model/backbones.py, a train_frozen dep): every download and every conversion is verified
against it. So another weights file means another table entry, which changes the
fingerprint, and the same entry gives the same fingerprint.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.bridge.stages import fingerprint
from tasks.model.backbones import get_backbone

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def repo(tmp_path, monkeypatch) -> Path:
    """The project's pipeline in a bare DVC repository, with train_frozen's input in place."""
    monkeypatch.chdir(tmp_path)  # DVC resolves stage names against the working directory, as in a run
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(PROJECT / name, tmp_path / name)
    shutil.copytree(PROJECT / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    (tmp_path / "artifacts" / "shards").mkdir(parents=True)
    (tmp_path / "artifacts" / "shards" / "index.json").write_text("{}")
    (tmp_path / "artifacts" / "production").mkdir(parents=True)
    (tmp_path / "artifacts" / "production" / "train_frozen.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50_v2"])
def test_another_weights_file_changes_train_frozens_fingerprint(repo, backbone):
    spec = get_backbone(backbone)
    registry = repo / "tasks" / "model" / "backbones.py"
    original = registry.read_text()
    before = fingerprint(repo, "train_frozen")
    assert fingerprint(repo, "train_frozen") == before  # the same weights: the same key

    assert original.count(spec.imagenet_hash) == 1
    registry.write_text(original.replace(spec.imagenet_hash, "f" * len(spec.imagenet_hash)))
    assert fingerprint(repo, "train_frozen") != before  # same name, other bytes

    assert original.count(f'"{spec.imagenet_file}"') == 1
    registry.write_text(original.replace(f'"{spec.imagenet_file}"', '"other_notop.h5"'))
    assert fingerprint(repo, "train_frozen") != before  # another file

    registry.write_text(original)
    assert fingerprint(repo, "train_frozen") == before
