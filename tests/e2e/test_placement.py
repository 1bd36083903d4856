"""Stage placement for real: a retrain run on a "cpu" pool hands its training stages to runs of
train-stage on a "gpu" pool (two process pools, a worker each, each worker on a "machine" of its
own: its own DVC cache and result folder), and the stages' data goes through the DVC remote on
S3 (moto's server, over HTTP)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import boto3
import psutil
import pytest

from flows.bridge.overrides import apply_overrides
from flows.bridge.placement import ZOMBIE_AUTOMATION
from flows.bridge.report import metrics_table

from .conftest import PROJECT, api, prefect_worker, run, start_prefect_server
from .moto_s3 import FAKE_AWS, MotoServer

# a whole pipeline, a lost machine, two clones per training stage and a reference training:
# past the 900 s default on 2 busy cores
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
BUCKET = "tagsmith-placement"
CPU, GPU = "tagsmith-test-cpu", "tagsmith-test-gpu"
PLACED = ["train_frozen", "train_full"]
HERE = ["ingest", "augment", "evaluate", "publish"]  # resolve_production runs everywhere (it is cheap)
HEARTBEAT_S, ZOMBIE_AFTER_S = 30, 60  # Prefect 3.9's shortest heartbeat period; two of them missed


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
    """A worker's environment on a machine of its own: only the server and S3 are shared.

    Its runs beat as often as Prefect allows (30 s), and the first retrain run creates the
    zombie automation with a 60 s threshold instead of 600 s, so a lost run is crashed in a
    test's time: every retrain of this module's server runs on such a worker.
    """
    (root / "tmp").mkdir(exist_ok=True)  # its flow runs' workspaces: a killed machine's stay in the test's folder
    return {**FAKE_AWS, "PREFECT_HOME": str(root / "prefect-home"), "TMPDIR": str(root / "tmp"),
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "local-results"), "TAGSMITH_DVC_CACHE": str(root / "dvc-cache"),
            "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
            "TAGSMITH_ZOMBIE_AFTER_S": str(ZOMBIE_AFTER_S)}


def ran_stages(text: str) -> set[str]:
    return {line.split("Running stage '")[1].split("'")[0] for line in text.splitlines() if "Running stage '" in line}


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


# train_full's epochs, and the one whose checkpoint on S3 ends the first machine: after the first
# (traced) epoch each takes ~1 s here: five of them leave the kill seconds of margin on a busy machine
EPOCHS, KILL_AFTER = 6, 1


def checkpointed_epochs(s3: MotoServer) -> list[int]:
    """The train_full epochs whose checkpoint is complete on S3 (its manifest is written last)."""
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/tagsmith-checkpoints/train_full/")
    keys = [o["Key"] for o in listing.get("Contents", [])]
    return sorted(int(k.split("/epoch-")[1][:4]) for k in keys if k.endswith("/MANIFEST.json"))


def lose_machine(pool: str) -> None:
    """SIGKILL the worker of ``pool`` with everything under it, as a reclaimed node goes.

    The worker starts each flow run in a session of its own (so killing the worker's group alone
    would leave the training running): every process of the tree is stopped first, so none can
    exit, spawn or upload while the tree is collected, then the worker's group and each of them
    is killed.
    """
    (worker,) = [p for p in psutil.Process().children() if pool in p.cmdline() and "worker" in p.cmdline()]
    frozen: dict[int, psutil.Process] = {}
    while new := [p for p in [worker, *worker.children(recursive=True)] if p.pid not in frozen]:
        for p in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGSTOP)
            frozen[p.pid] = p
    os.killpg(worker.pid, signal.SIGKILL)
    for p in frozen.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def wait_for(check, what: str, timeout: float, poll: float = 0.1):
    deadline = time.time() + timeout
    while not (value := check()):
        if time.time() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(poll)
    return value


def final_run(url: str, flow_run_id: str) -> dict | None:
    flow_run = api(url, f"/flow_runs/{flow_run_id}")
    return flow_run if flow_run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


def test_training_runs_on_the_gpu_pool_and_a_gpu_worker_killed_during_train_full_is_resumed_by_another(
        placement, tmp_path_factory):
    """One retrain run proves placement (training on the GPU pool, the rest on the CPU pool, the
    metrics of a one-process `dvc repro`) and recovery (the lost machine's train_full resumed from
    its S3 checkpoint by another, to the weights of an uninterrupted training): a pipeline costs minutes here."""
    repo, url, s3 = placement
    cpu, gpu, spare = (tmp_path_factory.mktemp(f"machine-{n}") for n in ("cpu", "gpu-lost", "gpu-spare"))
    (dep,) = api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["retrain"]}}})
    with prefect_worker(url, CPU, cpu, env=machine(cpu)) as cpu_log:
        with prefect_worker(url, GPU, gpu, env=machine(gpu), limit=1) as lost_log:
            parent = api(url, f"/deployments/{dep['id']}/create_flow_run", {"parameters": {
                "epochs_full": EPOCHS, "gpu_deployment": "train-stage/train-stage-gpu"}})
            # polled every 0.1 s: the machine goes well within an epoch of epoch KILL_AFTER's checkpoint
            seen = wait_for(lambda: KILL_AFTER in checkpointed_epochs(s3) or final_run(url, parent["id"]),
                            f"checkpoint of train_full epoch {KILL_AFTER} on S3", timeout=900)
            lose_machine(GPU)
        assert seen is True, f"the retrain run ended before train_full checkpointed: {seen}\n{lost_log.read_text()[-3000:]}"
        k = max(checkpointed_epochs(s3))  # the newest complete one: older ones are being deleted
        assert KILL_AFTER <= k < EPOCHS, f"the machine was lost after epoch {k}, not during training"
        with prefect_worker(url, GPU, spare, env=machine(spare), limit=1) as spare_log:
            parent = wait_for(lambda: final_run(url, parent["id"]), "final state of the retrain run",
                              timeout=900, poll=1)
    logs = cpu_log.read_text()[-4000:] + lost_log.read_text()[-3000:] + spare_log.read_text()[-5000:]
    assert parent["state"]["type"] == "COMPLETED", logs
    assert parent["work_pool_name"] == CPU
    (zombie,) = api(url, "/automations/filter", {"automations": {"name": {"any_": [ZOMBIE_AUTOMATION]}}})
    assert zombie["trigger"]["within"] == ZOMBIE_AFTER_S  # this module's retrain runs created it

    # each training stage is a flow run of its own on the GPU pool, a subflow of the retrain run;
    # the lost run was crashed for its silence and the stage dispatched again, to the spare worker
    children = api(url, "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent["id"]]}},
                                                "sort": "EXPECTED_START_TIME_ASC"})
    assert sorted({c["name"].rsplit("-", 1)[0] for c in children}) == PLACED
    assert {c["work_pool_name"] for c in children} == {GPU}
    frozen = [c["state"]["type"] for c in children if c["name"].startswith("train_frozen")]
    assert frozen == ["COMPLETED"], frozen
    full = [(c["state"]["type"], c["state"]["message"] or "") for c in children if c["name"].startswith("train_full")]
    assert [t for t, _ in full] == ["CRASHED", "COMPLETED"], full
    assert f"No heartbeat for {ZOMBIE_AFTER_S} s" in full[0][1]
    # ...each linked to the retrain run's task of that stage
    tasks = {t["id"]: t for t in api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [parent["id"]]}}})}
    for child in children:
        holder = tasks[child["parent_task_run_id"]]  # the run_deployment placeholder under the stage's task
        (up,) = holder["task_inputs"]["__parents__"]
        assert tasks[up["id"]]["name"] == child["name"].rsplit("-", 1)[0]

    # the GPU workers trained and nothing else; the CPU worker did everything else and no training
    assert ran_stages(lost_log.read_text()) == set(PLACED)
    assert ran_stages(cpu_log.read_text()) == set(HERE) | {"resolve_production"}
    assert "restoring its outputs from the DVC run-cache" in cpu_log.read_text()
    spare_text = spare_log.read_text()
    assert ran_stages(spare_text) == {"train_full"}
    assert f"resuming after epoch {k} from" in spare_text and f"checkpoint epoch {k} <- s3://{BUCKET}/" in spare_text
    trained = [int(n) for n in re.findall(rf"\bepoch (\d+)/{EPOCHS}\b", spare_text)]
    assert trained == list(range(k + 1, EPOCHS + 1)), spare_text[-3000:]
    assert checkpointed_epochs(s3) == [], "a completed stage leaves no checkpoint behind"

    # the placed models (what the runs pushed to the remote's run-cache), restored into a clone...
    ref = repo.parent.parent / "reference"
    run(["git", "clone", "-q", str(repo), str(ref)], repo)
    run([sys.executable, "-m", "dvc", "pull", "-q", "data.dvc"], ref, env=FAKE_AWS)
    apply_overrides(ref / "params.yaml", {"train_full.epochs": EPOCHS})
    out = run([sys.executable, "-m", "dvc", "repro", "--pull", "train_full"], ref, env=FAKE_AWS)
    assert not ran_stages(out.stdout + out.stderr) & set(PLACED), "the placed run's outputs were not restored"
    placed = tmp_path_factory.mktemp("placed")
    for stage in ("frozen", "full"):
        shutil.copytree(ref / "artifacts/models" / stage, placed / stage)
    # ...equal the same params run in one process (plain dvc repro, no flow, no pool, no checkpoints):
    # the data stages as restored, the training and evaluation forced here (their outputs are in
    # the clone's cache now: unforced, dvc would check them out instead of running them)
    out = run([sys.executable, "-m", "dvc", "repro", "--single-item", "--force", "--no-run-cache",
               "train_frozen", "train_full", "evaluate"], ref, env={"TAGSMITH_CHECKPOINTS": "off"})
    assert ran_stages(out.stdout + out.stderr) == {"train_frozen", "train_full", "evaluate"}
    assert json.loads((placed / "full/metadata.json").read_text())["epochs_run"] == EPOCHS
    assert (placed / "full/history.csv").read_text() == (ref / "artifacts/models/full/history.csv").read_text()
    check = ("import sys, numpy as np; from tasks.model.build import load_model\n"
             "for p, q in zip(sys.argv[1::2], sys.argv[2::2]):\n"
             "    a, b = (load_model(m)[0].get_weights() for m in (p, q))\n"
             "    assert len(a) == len(b)\n"
             "    for x, y in zip(a, b): np.testing.assert_array_equal(x, y)\n")
    run([sys.executable, "-c", check, *(str(d / s) for s in ("frozen", "full")
                                        for d in (placed, ref / "artifacts/models"))], ref)
    expected = metrics_table(json.loads((ref / "artifacts/eval/metrics.json").read_text()))
    (art,) = api(url, "/artifacts/filter", {"flow_runs": {"id": {"any_": [parent["id"]]}},
                                              "artifacts": {"key": {"any_": ["metrics"]}}})
    assert expected in art["data"], (expected, art["data"])
