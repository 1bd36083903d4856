"""Stage placement for real: a retrain run on a "cpu" pool hands its training stages to runs of
train-stage on a "gpu" pool (two process pools, a worker each, each worker on a "machine" of its
own: its own DVC cache and result folder), and the stages' data goes through the DVC remote on
S3 (moto's server, over HTTP)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest

from flows.bridge.overrides import apply_overrides
from flows.bridge.report import metrics_table

from .conftest import PROJECT, api, prefect_worker, run, start_prefect_server, trigger
from .moto_s3 import FAKE_AWS

# a whole pipeline, two clones per training stage and a reference training: past the 900 s default on 2 busy cores
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
BUCKET = "tagsmith-placement"
CPU, GPU = "tagsmith-test-cpu", "tagsmith-test-gpu"
PLACED = ["train_frozen", "train_full"]
HERE = ["ingest", "augment", "evaluate", "publish"]  # resolve_production runs everywhere (it is cheap)


@pytest.fixture(scope="module")
def placement(moto_s3, tiny_repo_factory, tmp_path_factory):
    """A repo whose DVC remote is on S3, retrain deployed to CPU and train-stage to GPU, on a server of its own."""
    s3 = moto_s3  # the session's endpoint; the bucket is this module's own
    boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    repo = tiny_repo_factory("placement")
    dvc = [sys.executable, "-m", "dvc"]
    run(dvc + ["remote", "add", "-d", "store", f"s3://{BUCKET}/dvc"], repo)
    run(dvc + ["remote", "modify", "store", "endpointurl", s3.url], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "S3 remote"], repo)
    run(dvc + ["push", "data.dvc"], repo, env=FAKE_AWS)
    with start_prefect_server(tmp_path_factory.mktemp("prefect-placement")) as url:
        env = {"PREFECT_API_URL": url}
        prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
        for pool in (CPU, GPU):
            run(prefect + ["work-pool", "create", pool, "--type", "process", "--base-job-template",
                           str(PROJECT / "infra/pools/process.json")], repo, env=env)
        for name, pool in (("retrain", CPU), ("train-stage-gpu", GPU)):
            run(prefect + ["deploy", "--prefect-file", str(PROJECT / "infra/prefect.yaml"), "--name", name,
                           "--pool", pool], repo, env=env)
        yield repo, url, s3


def machine(root: Path) -> dict[str, str]:
    """A worker's environment on a machine of its own: only the server and S3 are shared."""
    return {**FAKE_AWS, "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "local-results"), "TAGSMITH_DVC_CACHE": str(root / "dvc-cache"),
            "PREFECT_WORKER_QUERY_SECONDS": "2"}


def ran_stages(text: str) -> set[str]:
    return {line.split("Running stage '")[1].split("'")[0] for line in text.splitlines() if "Running stage '" in line}


def test_training_runs_on_the_gpu_pool_and_the_rest_on_the_cpu_pool(placement, tmp_path_factory):
    repo, url, _ = placement
    cpu, gpu = tmp_path_factory.mktemp("machine-cpu"), tmp_path_factory.mktemp("machine-gpu")
    with prefect_worker(url, CPU, cpu, env=machine(cpu)) as cpu_log, \
            prefect_worker(url, GPU, gpu, env=machine(gpu), limit=1) as gpu_log:
        parent = trigger(url, "retrain", {"epochs_full": 1, "gpu_deployment": "train-stage/train-stage-gpu"}, timeout=600)
    assert parent["state"]["type"] == "COMPLETED", cpu_log.read_text()[-5000:] + gpu_log.read_text()[-3000:]
    assert parent["work_pool_name"] == CPU

    # each training stage is a flow run of its own on the GPU pool, a subflow of the retrain run
    children = api(url, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent["id"]]}}})
    assert sorted(c["name"].rsplit("-", 1)[0] for c in children) == PLACED
    assert {(c["work_pool_name"], c["state"]["type"]) for c in children} == {(GPU, "COMPLETED")}
    # ...linked to the retrain run's task of that stage
    tasks = {t["id"]: t for t in api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [parent["id"]]}}})}
    for child in children:
        holder = tasks[child["parent_task_run_id"]]  # the run_deployment placeholder under the stage's task
        (up,) = holder["task_inputs"]["__parents__"]
        assert tasks[up["id"]]["name"] == child["name"].rsplit("-", 1)[0]

    # the GPU worker trained and nothing else; the CPU worker did everything else and no training
    assert ran_stages(gpu_log.read_text()) == set(PLACED)
    assert ran_stages(cpu_log.read_text()) == set(HERE) | {"resolve_production"}
    assert "restoring its outputs from the DVC run-cache" in cpu_log.read_text()

    # same metrics as the same params run in one process (plain dvc repro, no flow, no pool): the
    # data stages restored from the remote's run-cache, the training and evaluation run here
    ref = repo.parent.parent / "reference"
    run(["git", "clone", "-q", str(repo), str(ref)], repo)
    run([sys.executable, "-m", "dvc", "pull", "-q", "data.dvc"], ref, env=FAKE_AWS)
    apply_overrides(ref / "params.yaml", {"train_full.epochs": 1})
    run([sys.executable, "-m", "dvc", "repro", "--pull", "augment"], ref, env=FAKE_AWS)
    out = run([sys.executable, "-m", "dvc", "repro", "--no-run-cache", "evaluate"], ref, env={"TAGSMITH_CHECKPOINTS": "off"})
    assert ran_stages(out.stdout + out.stderr) >= {"train_frozen", "train_full", "evaluate"}
    expected = metrics_table(json.loads((ref / "artifacts/eval/metrics.json").read_text()))
    (art,) = api(url, "/artifacts/filter", {"flow_runs": {"id": {"any_": [parent["id"]]}},
                                              "artifacts": {"key": {"any_": ["metrics"]}}})
    assert expected in art["data"], (expected, art["data"])


FLOW = """
import json, sys
from flows.retrain import retrain
state = retrain(workspace=".", return_state=True, gpu_deployment="train-stage/train-stage-gpu")
print("FLOW_RUN_ID", state.state_details.flow_run_id, state.type.value)
"""


def test_placement_without_a_dvc_remote_refuses_before_any_stage(placement, tiny_repo_factory):
    _, url, _ = placement
    repo = tiny_repo_factory("placement-no-remote")
    out = run([sys.executable, "-c", FLOW], repo, env={"PREFECT_API_URL": url})
    _, flow_run_id, state = next(line for line in out.stdout.splitlines() if line.startswith("FLOW_RUN_ID")).split()
    assert state == "FAILED"
    assert "need a DVC remote" in out.stdout + out.stderr
    assert not api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    assert not (repo / "artifacts").exists()
