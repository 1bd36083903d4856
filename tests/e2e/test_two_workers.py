"""Two workers on two "machines": the second one reuses the stages the first one computed.

Each worker has its own Prefect home, its own local result folder and its own DVC cache, and
each run its own workspace (a fresh clone). What they share is what a GPU pool shares: the
Prefect server and one S3 bucket (moto's server, over HTTP) holding Prefect's results (block
`tagsmith-results`), the DVC remote with the run-cache, and the model registry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from flows.bridge.overrides import apply_overrides

from .conftest import PROJECT, api, prefect_worker, run, start_prefect_server, trigger
from .moto_s3 import FAKE_AWS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STAGES = ["resolve_production", "ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]
# Run on every run (resolve_production asks the registry); once after the first run's publish
# moved the production alias: publish re-checks and finds its candidate already there, ingest
# re-reads the splits with that model's ledger (the same ones: they are what it wrote).
RECHECKED = ["resolve_production", "ingest", "publish"]
BUCKET = "tagsmith-shared"
# recognisable credentials (moto accepts any): none may end up in the server, a log or S3
CREDS = {**FAKE_AWS, "AWS_ACCESS_KEY_ID": "TWOWORKERS-KEYID-7731", "AWS_SECRET_ACCESS_KEY": "two-workers-SECRET-9f3e",
         "AWS_SESSION_TOKEN": "two-workers-TOKEN-51ac"}
SECRETS = [CREDS[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]


@pytest.fixture(scope="module")
def s3(moto_s3):
    """The session's endpoint, with this module's bucket."""
    boto3.client("s3", endpoint_url=moto_s3.url, **_boto_creds()).create_bucket(Bucket=BUCKET)
    return moto_s3


def _boto_creds() -> dict[str, str]:
    return {"aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": CREDS["AWS_SESSION_TOKEN"], "region_name": CREDS["AWS_DEFAULT_REGION"]}


@pytest.fixture(scope="module")
def pool(s3, tiny_repo_factory, tmp_path_factory):
    """A repo whose DVC remote and registry are on S3, deployed to a server of its own,
    with the S3 result-storage block saved the way the README says."""
    repo = tiny_repo_factory("two-workers")
    env = dict(CREDS)
    dvc = [sys.executable, "-m", "dvc"]
    run(dvc + ["remote", "add", "-d", "store", f"s3://{BUCKET}/dvc"], repo)
    run(dvc + ["remote", "modify", "store", "endpointurl", s3.url], repo)
    registry = f"s3://{BUCKET}/registry"
    apply_overrides(repo / "params.yaml", {"registry.store": registry, "registry.endpoint_url": s3.url})
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "S3 remote and registry"], repo)
    run(dvc + ["push", "data.dvc"], repo, env=env)
    server_dir = tmp_path_factory.mktemp("prefect-two")
    with start_prefect_server(server_dir) as url:
        env |= {"PREFECT_API_URL": url, "PREFECT": str(Path(sys.executable).with_name("prefect"))}
        out = run([sys.executable, "-m", "flows.cli", "results-store", f"s3://{BUCKET}/prefect-results",
                   "--endpoint-url", s3.url], repo, env=env)
        (export,) = [line for line in out.stdout.splitlines() if line.startswith("export ")]
        block_setting = dict([export.removeprefix("export ").split("=", 1)])
        run(["bash", str(PROJECT / "infra/pools.sh"), "local"], repo, env=env)
        run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
             str(PROJECT / "infra/prefect.yaml"), "--all"], repo, env=env)
        yield repo, url, block_setting, server_dir


def machine(root: Path, block_setting: dict[str, str]) -> dict[str, str]:
    """The environment of a worker on a machine of its own: nothing local is shared."""
    return {**CREDS, **block_setting,
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "local-results"),
            "TAGSMITH_DVC_CACHE": str(root / "dvc-cache")}


def stage_states(url: str, flow_run_id: str) -> dict[str, str]:
    runs = api(url, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {t["name"]: t["state"]["name"] for t in runs if t["name"] in STAGES}


def run_logs(url: str, flow_run_id: str) -> str:
    logs = api(url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs)


def metrics_artifact(url: str, flow_run_id: str) -> str:
    arts = api(url, "/artifacts/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return next(a["data"] for a in arts if a["key"] == "metrics")


def test_second_worker_reuses_the_first_workers_stages(pool, s3, tmp_path_factory):
    repo, url, block_setting, server_dir = pool
    a, b = tmp_path_factory.mktemp("machine-a"), tmp_path_factory.mktemp("machine-b")

    with prefect_worker(url, "tagsmith-local", a, env=machine(a, block_setting)) as log_a:
        first = trigger(url, "retrain", {"epochs_full": 1})
    assert first["state"]["type"] == "COMPLETED", log_a.read_text()[-5000:]
    assert stage_states(url, first["id"]) == {s: "Completed" for s in STAGES}
    # training mirrored its epochs to the DVC remote's bucket, keyed by the stage's DVC run-cache
    # key (the fingerprint the flow passed), and removed them once the stage completed
    mirrored = re.findall(rf"checkpoint epoch 1 -> s3://{BUCKET}/dvc/tagsmith-checkpoints/train_full/(\w+)/epoch-0001",
                          log_a.read_text())
    assert mirrored, log_a.read_text()[-5000:]
    client = boto3.client("s3", endpoint_url=s3.url, **_boto_creds())
    run_cache = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/runs/").get("Contents", [])]
    assert any(f"/{mirrored[0]}/" in k for k in run_cache), (mirrored, run_cache)
    assert not client.list_objects_v2(Bucket=BUCKET, Prefix="dvc/tagsmith-checkpoints/").get("Contents")

    with prefect_worker(url, "tagsmith-local", b, env=machine(b, block_setting)) as log_b:
        second = trigger(url, "retrain", {"epochs_full": 1})
    assert second["state"]["type"] == "COMPLETED", log_b.read_text()[-5000:]

    # Prefect found every stage in the shared results; DVC restored the outputs from the remote
    assert stage_states(url, second["id"]) == {s: "Cached" for s in STAGES} | {s: "Completed" for s in RECHECKED}
    logs = run_logs(url, second["id"])
    ran = sorted({line.split("'")[1] for line in logs.splitlines() if line.startswith("Running stage")})
    assert ran == sorted(RECHECKED), f"the second worker recomputed {ran}"
    assert logs.count("restoring outputs from the DVC run-cache") == len(STAGES) - len(RECHECKED)
    assert metrics_artifact(url, second["id"]) == metrics_artifact(url, first["id"])

    # ...and it got them over S3, not from anything on its own disk
    assert not list((b / "local-results").glob("tagsmith-*")), "stage results went to the local folder"
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3.url, **_boto_creds())
            .list_objects_v2(Bucket=BUCKET, Prefix="prefect-results/")["Contents"]]
    assert {k.split("/")[1].rsplit("-", 1)[0] for k in keys if "/tagsmith-" in k} >= {
        f"tagsmith-{s}" for s in STAGES if s != "resolve_production"}  # never cached
    assert list((b / "dvc-cache" / "files").rglob("*")), "machine B's DVC cache is empty: nothing was restored"

    # the credentials both machines held are in no log, block, database row, result or file
    client = boto3.client("s3", endpoint_url=s3.url, **_boto_creds())
    stored = [client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys]
    texts = [run_logs(url, r["id"]) for r in (first, second)] + [log_a.read_text(), log_b.read_text(),
             json.dumps(api(url, "/artifacts/filter", {})), json.dumps(api(url, "/block_documents/filter", {}))]
    files = [p for root in (repo, a, b, server_dir) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    for secret in SECRETS:
        assert not [t for t in texts if secret in t]
        assert not [blob for blob in stored if secret.encode() in blob]
        assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_results_store_refuses_a_bucket_it_cannot_write_and_saves_nothing(pool, s3):
    repo, url, _, _ = pool
    out = subprocess.run([sys.executable, "-m", "flows.cli", "results-store", "s3://no-such-bucket/results",
                          "--endpoint-url", s3.url, "--name", "broken-results"], cwd=repo,
                         env=dict(os.environ, **CREDS, PREFECT_API_URL=url), capture_output=True, text=True)
    assert out.returncode == 1
    assert "s3://no-such-bucket/results is not writable: NoSuchBucket" in out.stderr
    names = [d["name"] for d in api(url, "/block_documents/filter", {})]
    assert "tagsmith-results" in names and "broken-results" not in names
