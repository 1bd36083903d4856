"""`dvc repro` runs the whole pipeline on tiny data, then finds nothing to do."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import run

STAGES = ["ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def reproduced(tiny_repo_factory):
    repo = tiny_repo_factory("dvc-repro")
    first = run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo, first.stdout


def test_every_stage_runs_once_in_dag_order(reproduced):
    _, out = reproduced
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == STAGES


def test_stages_leave_their_outputs(reproduced):
    repo, _ = reproduced
    for path in ("artifacts/dataset/manifest.csv", "artifacts/shards/index.json", "artifacts/shards/preview.png",
                 "artifacts/models/frozen/model.keras", "artifacts/models/full/model.keras",
                 "artifacts/models/full/metadata.json", "artifacts/eval/metrics.json",
                 "artifacts/publish/receipt.json"):
        assert (repo / path).is_file(), path
    assert not list((repo / "data").glob("*.csv")), "a stage wrote under data/"


def test_second_repro_runs_nothing(reproduced):
    repo, _ = reproduced
    again = run([sys.executable, "-m", "dvc", "repro"], repo).stdout
    assert "Running stage" not in again
    status = run([sys.executable, "-m", "dvc", "status", "--json"], repo).stdout
    assert json.loads(status) == {}


def test_metrics_are_dvc_metrics(reproduced):
    repo, _ = reproduced
    shown = json.loads(run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo).stdout)
    metrics = next(iter(shown.values()))["data"]["artifacts/eval/metrics.json"]["data"]
    assert {"p_at_1", "map"} <= set(metrics)
    assert 0.0 <= metrics["map"] <= 1.0


def test_dag_is_the_documented_chain(reproduced):
    repo, _ = reproduced
    dag = run([sys.executable, "-m", "dvc", "dag", "--dot"], repo).stdout
    for a, b in zip(STAGES, STAGES[1:]):
        assert f'"{a}" -> "{b}"' in dag, (a, b, dag)
