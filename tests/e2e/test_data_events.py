"""`tagsmith data add` against S3 (moto over HTTP) tells a real Prefect server, and the retrain
deployment's trigger from infra/prefect.yaml turns a burst of additions into one flow run.

The deployment is infra/prefect.yaml's retrain-nightly with three test-only changes: its own
name and pool (no worker serves it, so the run it gets stays Scheduled and is counted, not run),
no cron (the count is the trigger's alone) and a 20 s quiet period instead of 5 minutes.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import boto3
import pytest
import yaml
from PIL import Image

from tasks.datasource.store import open_source
from tasks.datasource.slices import add_slice

from .conftest import PROJECT, api, run
from .moto_s3 import FAKE_AWS

pytestmark = pytest.mark.e2e
NAME, POOL = "retrain-on-data-test", "tagsmith-events-test"


@pytest.fixture(scope="module")
def s3(moto_s3):
    return moto_s3  # the session's endpoint; this module's buckets are its own


@pytest.fixture(scope="module")
def triggered_deployment(prefect_server, tiny_repo_factory, tmp_path_factory) -> str:
    """infra/prefect.yaml's retrain-nightly, trigger included, deployed; returns its id."""
    repo = tiny_repo_factory("events")
    spec = yaml.safe_load((PROJECT / "infra/prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "retrain-nightly"]
    (trig,) = dep["triggers"]
    assert (trig["posture"], trig["after"], trig["expect"]) == ("Proactive", ["tagsmith.data.slice-added"], ["tagsmith.data.slice-added"])
    assert dep["concurrency_limit"]["limit"] == 1
    dep.update(name=NAME, schedules=[], work_pool={"name": POOL, "work_queue_name": "default", "job_variables": {}})
    trig["within"] = 20  # seconds; Prefect's minimum for a Proactive trigger is 10
    spec["deployments"] = [dep]
    spec_file = tmp_path_factory.mktemp("spec") / "prefect.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {"PREFECT_API_URL": prefect_server}
    run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"], repo, env=env)
    run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(spec_file), "--name", NAME], repo, env=env)
    (found,) = api(prefect_server, "/deployments/filter", {"deployments": {"name": {"any_": [NAME]}}})
    return found["id"]


def _batch(root, names: list[str]) -> tuple[str, str]:
    folder = root / "images"
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(buf, "JPEG")
        (folder / name).write_bytes(buf.getvalue())
    (root / "labels.tsv").write_text("".join(f"{n}\tcat\n" for n in names))
    return str(folder), str(root / "labels.tsv")


def test_data_add_emits_an_event_and_a_burst_starts_one_run(s3, prefect_server, triggered_deployment, tmp_path):
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3.url, **{k.lower(): v for k, v in FAKE_AWS.items() if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    source = f"s3://{bucket}/dataset"
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": s3.url, "PREFECT_API_URL": prefect_server}
    since = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat()
    # the first slice brings the classes; then a burst of two writers at once (own slice ids)
    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k != "PREFECT_API_URL"}):
        add_slice(open_source(source), *map(Path, _batch(tmp_path / "b0", ["img0.jpg"])), classes_file=tmp_path / "classes.txt")
    slices = ["burst-a", "burst-b"]
    procs = []
    for sid in slices:
        folder, labels = _batch(tmp_path / sid, [f"{sid}-{j}.jpg" for j in range(3)])
        procs.append(subprocess.Popen([sys.executable, "-m", "flows.cli", "data", "add", folder, "--labels", labels,
                                       "--source", source, "--slice", sid], cwd=PROJECT, env={**os.environ, **env},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "emitted event tagsmith.data.slice-added" in err, err

    def events() -> list[dict]:
        query = {"filter": {"event": {"name": ["tagsmith.data.slice-added"]}, "occurred": {"since": since}}}
        return api(prefect_server, "/events/filter", query)["events"]

    deadline = time.time() + 30
    while len(events()) < 2 and time.time() < deadline:  # the server stores events in batches
        time.sleep(1)
    events = events()
    assert sorted(e["payload"]["slice"] for e in events) == slices
    assert {e["resource"]["prefect.resource.id"] for e in events} == {f"tagsmith.data.source.{source}"}

    def runs() -> list[dict]:
        return api(prefect_server, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [triggered_deployment]}}})

    deadline = time.time() + 60
    while not runs() and time.time() < deadline:
        time.sleep(2)
    assert len(runs()) == 1, "the trigger did not start a run within 60 s of the last event"
    time.sleep(8)  # the server evaluates Proactive triggers every 5 s: a second firing would show by now
    assert len(runs()) == 1
