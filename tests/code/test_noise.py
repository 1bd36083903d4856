"""TensorFlow's start-up chatter stays off the terminal; everything else gets through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.common.noise import is_noise

PROJECT = Path(__file__).resolve().parents[2]


def test_chatter_is_recognised_and_warnings_are_not():
    assert is_noise("I0000 00:00:1796064011.385614   16227 port.cc:153] oneDNN custom operations are on.")
    assert is_noise("I0000 00:00:1796064011.390047   16227 cudart_stub.cc:31] Could not find cuda drivers")
    assert is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not is_noise("W0000 00:00:1796064011.390047   16227 something.cc:31] a real warning")
    assert not is_noise("ingest: 3000 rows read, 2990 kept")


def test_tagsmith_prints_no_tensorflow_chatter(tmp_path):
    """A subcommand that imports TensorFlow in-process, with TF_CPP_MIN_LOG_LEVEL unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(PROJECT)
    (tmp_path / "img.txt").write_text("not an image")
    r = subprocess.run([sys.executable, "-m", "flows.cli", "predict", "--model", str(tmp_path / "missing"),
                        str(tmp_path / "img.txt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr
    assert "tagsmith predict: error:" in r.stderr
    noisy = [line for line in r.stderr.splitlines() if "oneDNN" in line or "cuda" in line or "absl" in line]
    assert not noisy, noisy
