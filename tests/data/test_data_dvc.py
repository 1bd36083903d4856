"""The committed data.dvc is exactly what the generator writes for the demo preset."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tasks.demo import synth

PROJECT = Path(__file__).resolve().parents[2]


def test_committed_data_dvc_matches_the_generator(tmp_path):
    committed = yaml.safe_load((PROJECT / "data.dvc").read_text())["outs"][0]
    synth.generate(tmp_path / "data", preset="demo", workers=2)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "add", "-q", "data"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    written = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    assert (written["md5"], written["nfiles"], written["size"]) == (
        committed["md5"], committed["nfiles"], committed["size"]
    ), "data.dvc is stale: run `tagsmith data --preset demo && dvc add data` and commit data.dvc"
