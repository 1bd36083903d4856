"""`make demo-nightly`, tiny: three nights of the retrain flow against S3 (moto over HTTP) and a
real Prefect server. New data reaches night 3 without a commit; night 2 has nothing new: all
Cached, nothing published; night 3 re-runs the data's stages warm-started from production,
keeping every split v1 was trained with."""

from __future__ import annotations

import json
import sys

import boto3
import pytest

from .conftest import PROJECT, TINY_PARAMS, run
from .moto_s3 import FAKE_AWS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DATA_STAGES = ["ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]


@pytest.fixture(scope="module")
def s3(moto_s3):
    return moto_s3  # the session's endpoint; this module's buckets are its own


def test_three_nights_follow_the_data(s3, prefect_server, tmp_path):
    env = {**FAKE_AWS, "AWS_ENDPOINT_URL": s3.url, "PREFECT_API_URL": prefect_server}
    boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="nightly")
    sets = [arg for k, v in TINY_PARAMS.items() for arg in ("--set", f"{k}={v}")]
    out = run([sys.executable, "-m", "flows.demo_nightly", "--preset", "tiny", "--workdir", str(tmp_path / "demo"),
               "--bucket", "nightly", *sets], PROJECT, env=env)
    first, second, third = json.loads((tmp_path / "demo/nights.json").read_text())["nights"]

    assert first["receipt"]["outcome"] == "published"
    # night 2: nothing new; production moved in night 1, so publish re-checks and finds itself,
    # and ingest re-reads the splits with v1's ledger: the same ones, so nothing after it runs
    assert {s: second["states"][s] for s in DATA_STAGES[1:-1]} == {s: "Cached" for s in DATA_STAGES[1:-1]}
    assert second["states"]["ingest"] == "Completed"
    assert second["receipt"]["outcome"] == "unchanged"
    assert "every stage Cached; nothing published" in out.stdout
    # night 3: the new slice, imported by the run itself (the repository's commit is unchanged)
    assert {s: third["states"][s] for s in DATA_STAGES} == {s: "Completed" for s in DATA_STAGES}
    assert third["receipt"]["outcome"] in ("published", "rejected")
    assert third["receipt"]["compared_with"] == first["receipt"]["version"]
    repo = tmp_path / "demo/repo"
    assert run(["git", "log", "--oneline"], repo).stdout.count("\n") == 1
    assert len(list((repo / "data/slices").glob("*.dvc"))) == 2
    if third["receipt"]["outcome"] == "published":
        assert f"parent={first['receipt']['version']}" in out.stdout

    # night 3 kept the splits v1 was trained with, though no one committed a ledger
    registry = json.loads((tmp_path / "demo/nights.json").read_text())["registry"]
    bucket, prefix = registry.removeprefix("s3://").split("/", 1)
    s3c = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")

    def published_splits(version: str) -> dict[str, str]:
        text = s3c.get_object(Bucket=bucket, Key=f"{prefix}/tagsmith/{version}/splits.tsv")["Body"].read().decode()
        return {row.split("\t")[0]: row.split("\t")[1] for row in text.splitlines()[1:]}

    v1 = published_splits(first["receipt"]["version"])
    night3 = {row.split("\t")[0]: row.split("\t")[1]
              for row in (repo / "artifacts/splits/ledger.tsv").read_text().splitlines()[1:]}
    assert v1 and len(night3) > len(v1)
    assert {h: night3[h] for h in v1} == v1  # none of v1's train/val images in night 3's test split
    assert not (repo / "data.splits.tsv").read_text().splitlines()[1:]
    if third["receipt"]["outcome"] == "published":
        assert published_splits(third["receipt"]["version"]) == night3
