"""A stage killed with SIGKILL resumes from its last finished epoch and ends with the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.model.build import load_model
from tests.model.tiny_data import make_shards

REPO = Path(__file__).resolve().parents[2]
PARAMS = """train_frozen:
  backbone: small_cnn
  weights: none
  epochs: 5
  batch_size: 4
  patience: 10
  dropout: 0.2
"""


def _start(cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "tasks.train", "frozen"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _workdir(root: Path) -> Path:
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS)
    make_shards(root / "artifacts/shards")
    return root


@pytest.mark.slow  # three TensorFlow processes: ~40 s on an idle 2-core machine
def test_sigkilled_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    killed, clean = _workdir(tmp_path / "killed"), _workdir(tmp_path / "clean")
    reference = _start(clean)  # runs alongside: both processes are tiny
    proc = _start(killed)
    deadline = time.time() + 240
    while not list(killed.glob(".tagsmith/checkpoints/frozen/*/epoch-0002")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "artifacts/models/frozen/model.keras").exists()

    resumed = _start(killed)
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert "resuming after epoch" in out and "epoch 1/5" not in out, out
    assert reference.wait(timeout=240) == 0, reference.stdout.read()

    a, _ = load_model(killed / "artifacts/models/frozen")
    b, _ = load_model(clean / "artifacts/models/frozen")
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert (killed / "artifacts/models/frozen/history.csv").read_text() == (
        clean / "artifacts/models/frozen/history.csv").read_text()
    assert not list(killed.glob(".tagsmith/checkpoints/frozen/*/epoch-*"))
