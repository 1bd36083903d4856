"""Deployments for real: infra/prefect.yaml deployed to a server, a process worker, runs made
through the API the UI uses, each in its own clone, and no credential anywhere in what they leave."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tasks.registry import lineage
from tasks.registry.client import open_store, resolve

from .conftest import PROJECT, api, prefect_worker, run, trigger
from .test_flow import experiments

pytestmark = pytest.mark.e2e
FAKE = {"AWS_ACCESS_KEY_ID": "FAKEKEYID-tagsmith-0000", "AWS_SECRET_ACCESS_KEY": "FAKE-SECRET-xyz-tagsmith-e2e"}


@pytest.fixture(scope="module")
def deployed(prefect_server, tiny_repo_factory, tmp_path_factory):
    """The tiny repo deployed from the project's own deployment file, and a worker serving it."""
    repo = tiny_repo_factory("deploy")
    env = {"PREFECT_API_URL": prefect_server, "PREFECT": str(Path(sys.executable).with_name("prefect"))}
    run(["bash", str(PROJECT / "infra/pools.sh"), "local"], repo, env=env)
    run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(PROJECT / "infra/prefect.yaml"), "--all"], repo, env=env)
    with prefect_worker(prefect_server, "tagsmith-local", tmp_path_factory.mktemp("worker"), env=FAKE) as log_path:
        yield repo, log_path


@pytest.fixture(scope="module")
def retrain_run(deployed, prefect_server):
    return trigger(prefect_server, "retrain", {"epochs_full": 1})


def test_retrain_run_from_the_api_completes_with_its_artifacts(retrain_run, prefect_server, deployed):
    repo, log = deployed
    assert retrain_run["state"]["type"] == "COMPLETED", log.read_text()[-4000:]
    arts = api(prefect_server, "/artifacts/filter", {"flow_runs": {"id": {"any_": [retrain_run["id"]]}}})
    assert {"metrics", "stages"} <= {a["key"] for a in arts}
    metrics = next(a for a in arts if a["key"] == "metrics")["data"]
    assert "p_at_1" in metrics and "train_full.epochs" in metrics  # the UI's parameter reached params.yaml


def test_the_ui_is_served(prefect_server):
    with urllib.request.urlopen(prefect_server.removesuffix("/api") + "/", timeout=30) as r:
        assert r.status == 200 and "<html" in r.read(4096).decode().lower()


def test_the_run_worked_in_its_own_clone_not_the_source_checkout(retrain_run, deployed):
    repo, _ = deployed
    assert retrain_run["state"]["type"] == "COMPLETED"
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # params.yaml untouched here
    assert not (repo / "artifacts").exists()
    assert list((repo / "registry").iterdir()), "the shared registry did not receive the published model"


def test_the_run_is_a_git_ref_of_the_deployed_repository_and_the_version_names_it(retrain_run, deployed):
    repo, _ = deployed
    assert retrain_run["state"]["type"] == "COMPLETED"
    store = open_store(str(repo / "registry"))
    record = lineage.read(store, "tagsmith", resolve(store, "tagsmith", "production"))
    assert record["ref"].startswith("refs/exps/") and record["ref"].endswith("/" + retrain_run["name"])
    assert record["flow_run"]["id"] == retrain_run["id"] and record["repository"] == str(repo)
    # pushed back: a person can check it out here (git fetch origin <ref> elsewhere)
    assert "train_full:" in run(["git", "show", f"{record['ref']}:dvc.lock"], repo).stdout
    assert yaml.safe_load(run(["git", "show", f"{record['ref']}:params.yaml"], repo).stdout)["train_full"]["epochs"] == 1


def test_sweep_fans_out_to_retrain_runs_and_compares_them(deployed, prefect_server, retrain_run):
    repo, log = deployed
    # one cell equal to the run above (so its stages come from the shared caches)
    sweep = trigger(prefect_server, "sweep", {"grid": "demo", "modes": ["frozen+full"], "image_sizes": [32],
                                              "params": {"train_full.epochs": 1}, "max_parallel": 1})
    assert sweep["state"]["type"] == "COMPLETED", log.read_text()[-4000:]
    children = api(prefect_server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [sweep["id"]]}}})
    assert [c["name"] for c in children] == ["small_cnn-frozen-full-lr0.001-32px"]
    (art,) = api(prefect_server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["sweep-comparison"]}}})
    assert "| small_cnn |" in art["data"] and "mAP frozen+full" in art["data"]
    assert list((repo / ".tagsmith/sweeps").glob("*/comparison.csv"))
    # the cell is a DVC experiment of the deployed repository, pushed back from its workspace
    (exp,) = [e for e in experiments(repo) if e["name"] == f"{sweep['name']}-small_cnn-frozen-full-lr0.001-32px"]
    assert exp["data"]["params"]["params.yaml"]["data"]["train_full"]["epochs"] == 1
    assert "| small_cnn |" in art["data"] and f"{exp['data']['metrics']['artifacts/eval/metrics.json']['data']['map']:.4f}" in art["data"]


def test_fake_credentials_appear_in_no_log_artifact_or_output(retrain_run, prefect_server, deployed):
    repo, worker_log = deployed
    logs = api(prefect_server, "/logs/filter", {"logs": {"flow_run_id": {"any_": [retrain_run["id"]]}}, "limit": 200})
    assert logs, "no logs to check"
    texts = {"worker log": worker_log.read_text(), "run logs": json.dumps(logs), "run": json.dumps(retrain_run),
             "artifacts": json.dumps(api(prefect_server, "/artifacts/filter", {}))}
    stores = [repo, Path(os.environ["PREFECT_HOME"])]  # source checkout (DVC cache, registry), results
    files = [p for root in stores for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    for secret in FAKE.values():
        assert not [name for name, text in texts.items() if secret in text]
        assert not [p for p in files if secret.encode() in p.read_bytes()]


@pytest.mark.long
@pytest.mark.timeout(2400)
def test_transfer_sweep_makes_the_studys_table_with_imagenet_rows(deployed, prefect_server):
    """The deployed sweep's `transfer` grid: small_cnn from scratch and efficientnet_lite0 from
    ImageNet, each with its recipe, frozen only and frozen then full: one table, four runs."""
    repo, log = deployed
    # one frozen epoch each keeps it minutes; full epochs stay the recipes' (a mode's 0 stays 0)
    sweep = trigger(prefect_server, "sweep", {"grid": "transfer", "params": {"train_frozen.epochs": 1},
                                              "max_parallel": 1}, timeout=1800)
    assert sweep["state"]["type"] == "COMPLETED", log.read_text()[-4000:]
    children = api(prefect_server, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [sweep["id"]]}}})
    assert sorted(c["name"] for c in children) == sorted([
        "small_cnn-frozen", "small_cnn-frozen-full", "efficientnet_lite0-frozen", "efficientnet_lite0-frozen-full"]), \
        [c["name"] for c in children]
    assert all(c["state"]["type"] == "COMPLETED" for c in children)
    arts = api(prefect_server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["sweep-comparison"]}}})
    table = arts[-1]["data"]
    assert "| efficientnet_lite0 | imagenet |" in table and "| small_cnn | none |" in table, table
    assert "mAP frozen" in table and "mAP frozen+full" in table
