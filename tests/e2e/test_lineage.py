"""Lineage: a published version names the code, data, params, parent and flow run that made it and
the git ref of its run; `tagsmith registry lineage` walks its parents and `registry reproduce`
rebuilds its model from that ref in a fresh clone, to the same weights (real Prefect server, dvc)."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from flows.bridge.stages import experiment_ref
from tasks.common.files import sha256_file
from tasks.registry import lineage
from tasks.registry.stores import open_store

from .conftest import run
from .test_flow import run_flow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _published(repo) -> str:
    receipt = json.loads((repo / "artifacts/publish/receipt.json").read_text())
    assert receipt["outcome"] in ("published", "forced"), receipt["gate"]
    return receipt["version"]


def test_lineage_names_the_run_and_reproduce_rebuilds_the_same_weights(prefect_server, tiny_repo_factory, tmp_path):
    repo = tiny_repo_factory("lineage")
    run_flow(repo, prefect_server, epochs_full=1, experiment="night-1")
    first = _published(repo)
    # warm-started from the production model the first run published (forced: the gate is not the point)
    run_flow(repo, prefect_server, epochs_full=1, weights="production", force_publish=True, experiment="night-2")
    second = _published(repo)
    assert second != first

    store = open_store(str(repo / "registry"))
    record = lineage.read(store, "tagsmith", second)
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    assert record["ref"] == experiment_ref(repo, "night-2") and record["commit"] == head
    assert record["parent"] == first and record["compared_with"] == first
    # its ingest kept the splits of the model it started from; reproduce pins that ledger
    read = record["registry_inputs"]["ingest"]
    assert read["version"] == first
    assert read["ledger"]["sha256"] == sha256_file(repo / "registry/tagsmith" / first / "splits.tsv")
    assert record["data"]["data.dvc"]["md5"] == yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    assert record["params"]["train_frozen"]["weights"] == "production"
    assert record["flow_run"]["id"] and record["repository"] == str(repo)
    # the ref holds the run's params, lock and split ledger
    assert "weights: production" in run(["git", "show", f"{record['ref']}:params.yaml"], repo).stdout
    assert "train_full:" in run(["git", "show", f"{record['ref']}:dvc.lock"], repo).stdout
    run(["git", "cat-file", "-e", f"{record['ref']}:data.splits.tsv"], repo)

    cli = [sys.executable, "-m", "flows.cli", "registry"]
    chain = json.loads(run(cli + ["lineage", second], repo).stdout)
    assert [(c["version"], c["parent"]) for c in chain] == [(second, first), (first, None)]
    assert json.loads(run(cli + ["show", second], repo).stdout)["lineage"]["ref"] == record["ref"]

    out = json.loads(run(cli + ["reproduce", second, "--into", str(tmp_path / "rebuilt")], repo).stdout)
    assert out["weights_equal"], out
