"""The Prefect flow against a real server: runs every stage, then all Cached (but the registry
check, and publish once after its own publish moved the alias it reads), then the subset."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from .conftest import api, run

STAGES = ["resolve_production", "ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]
ALWAYS = {"resolve_production": "Completed"}  # asks the registry on every run: never cached
CACHED = {s: "Cached" for s in STAGES} | ALWAYS
pytestmark = pytest.mark.e2e

FLOW = """
import json, sys
from flows.retrain import retrain
state = retrain(workspace=".", return_state=True, **json.loads(sys.argv[1]))
print("FLOW_RUN_ID", state.state_details.flow_run_id, state.type.value)
"""


def run_flow(repo, api_url: str, **params) -> dict[str, str]:
    """Run the flow in its own process; return {task run name: state name} for the stages.

    Results (the cache) go beside the repo: other tests' runs of the same tiny pipeline would
    otherwise rightly count as cached here.
    """
    env = {"PREFECT_API_URL": api_url, "PREFECT_LOCAL_STORAGE_PATH": str(repo.parent / "prefect-results")}
    out = run([sys.executable, "-c", FLOW, json.dumps(params)], repo, env=env)
    line = next(line for line in out.stdout.splitlines() if line.startswith("FLOW_RUN_ID"))
    _, flow_run_id, state = line.split()
    assert state == "COMPLETED", (out.stdout + out.stderr)[-5000:]
    runs = api(api_url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {t["name"]: t["state"]["name"] for t in runs if t["name"] in STAGES or t["name"].endswith("-forced")}


@pytest.fixture(scope="module")
def first_run(tiny_repo_factory, prefect_server):
    """A workspace after the flow's first run: its stage states and the dvc.lock it wrote."""
    repo = tiny_repo_factory("flow")
    states = run_flow(repo, prefect_server)
    return repo, states, (repo / "dvc.lock").read_text()


def test_flow_runs_cached_then_subset(first_run, prefect_server):
    flow_repo, first, lock = first_run
    assert first == {s: "Completed" for s in STAGES}
    model = flow_repo / "artifacts/models/full/model.keras"
    mtime = model.stat().st_mtime_ns

    # the first run's publish moved the production alias, which publish reads, to a model whose
    # split ledger ingest reads: one re-check each (ingest's outputs stay the same, so no more)
    second = run_flow(flow_repo, prefect_server)
    assert second == CACHED | {"ingest": "Completed", "publish": "Completed"}
    assert json.loads((flow_repo / "artifacts/publish/receipt.json").read_text())["outcome"] == "unchanged"
    assert model.stat().st_mtime_ns == mtime, "a cached re-run rewrote the model"
    lock = (flow_repo / "dvc.lock").read_text()
    settled = run_flow(flow_repo, prefect_server)
    assert settled == CACHED
    assert (flow_repo / "dvc.lock").read_text() == lock
    status = run([sys.executable, "-m", "dvc", "status", "--json"], flow_repo).stdout
    assert json.loads(status) == {"resolve_production": ["always changed"]}, "dvc repro would still run something"

    # the registry lost the published version (not the alias): publish is cached, but the flow publishes again
    receipt = json.loads((flow_repo / "artifacts/publish/receipt.json").read_text())
    assert receipt["published"]
    shutil.rmtree(flow_repo / "registry/tagsmith" / receipt["version"])
    again = run_flow(flow_repo, prefect_server)
    assert again == CACHED | {"publish-forced": "Completed"}
    assert (flow_repo / "registry/tagsmith" / receipt["version"] / "MANIFEST.json").is_file()
    assert json.loads((flow_repo / "artifacts/publish/receipt.json").read_text())["version"] == receipt["version"]
    assert set(json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], flow_repo).stdout)) == set(ALWAYS)

    third = run_flow(flow_repo, prefect_server, epochs_full=1, experiment="one-full-epoch")
    expected = CACHED | {s: "Completed" for s in STAGES[4:]}
    assert third == expected
    assert "epochs: 1" in (flow_repo / "params.yaml").read_text()
    assert set(json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], flow_repo).stdout)) == set(ALWAYS)
    # ...and it is a DVC experiment, with the params and metrics it ran with
    (exp,) = experiments(flow_repo)
    assert exp["name"] == "one-full-epoch"
    assert exp["data"]["params"]["params.yaml"]["data"]["train_full"]["epochs"] == 1
    metrics = json.loads((flow_repo / "artifacts/eval/metrics.json").read_text())
    assert exp["data"]["metrics"]["artifacts/eval/metrics.json"]["data"]["map"] == metrics["map"]


def experiments(repo) -> list[dict]:
    """The DVC experiments of ``repo``'s HEAD, as `dvc exp show --json` lists them."""
    rows = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo).stdout)
    return [rev for row in rows for group in (row.get("experiments") or []) for rev in group["revs"]]


def test_flow_and_dvc_repro_write_the_same_lock(first_run, first_repro):
    _, _, by_flow = first_run  # the lock of a first run, every stage run by the flow
    _, _, by_dvc = first_repro  # ...and of a first `dvc repro` of the same tiny repo
    assert by_dvc == by_flow
