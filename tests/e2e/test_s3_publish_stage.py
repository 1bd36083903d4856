"""The publish stage's entry point (`python -m tasks.publish`, run in-process) against a real S3 endpoint (moto server, found through
AWS_ENDPOINT_URL): first publish passes with no baseline, a worse model is REJECTED with
exit 0 and the alias stays; predict then loads production from S3 (verified download)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from tasks import evaluate, publish
from tasks.serving import predict
from tasks.registry import client as registry
from tasks.common import paths
from tasks.common.config import EvaluateConfig
from tasks.splits import ledger
from tests.model.evalkit import make_model, make_shards

from .moto_s3 import FAKE_AWS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(moto_s3):
    return moto_s3  # the session's endpoint; this module's buckets are its own


def stage_dir(root: Path, sign: float) -> None:
    """Put a model and its evaluation where the publish stage reads them."""
    art = root / "artifacts"
    shutil.rmtree(art / "models", ignore_errors=True)
    shutil.rmtree(art / "eval", ignore_errors=True)
    make_model(art / "models" / "full", sign)
    evaluate.run(EvaluateConfig(batch_size=8), art / "models" / "full", art / "shards", art / "eval")


def run_publish(capsys) -> tuple[int, str]:
    """The stage's entry point in-process (a subprocess would pay TensorFlow's import again)."""
    try:
        publish.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().out


def test_publish_stage_on_s3_gate_and_predict(server, tmp_path, monkeypatch, capsys):
    for k, v in {**FAKE_AWS, "AWS_ENDPOINT_URL": server.url}.items():
        monkeypatch.setenv(k, v)
    bucket = f"reg-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    store_uri = f"s3://{bucket}/models"
    root = tmp_path / "repo"
    make_shards(root / "artifacts")
    (root / paths.SPLITS).mkdir(parents=True)
    ledger.write(root / paths.SPLITS_LEDGER, {})  # what ingest writes beside the shards
    (root / "params.yaml").write_text(
        f"publish:\n  batch_size: 8\nregistry:\n  store: {store_uri}\n  model_name: m\n  s3_max_attempts: 2\n")
    monkeypatch.chdir(root)  # the stage reads params.yaml and artifacts/ from the cwd

    stage_dir(root, 1.0)
    code, out = run_publish(capsys)
    assert code == 0, out
    good = json.loads((root / "artifacts/publish/receipt.json").read_text())
    assert good["outcome"] == "published" and good["uri"] == f"{store_uri}/m/{good['version']}"

    stage_dir(root, -1.0)
    code, out = run_publish(capsys)
    assert code == 0  # a rejection is not a failure
    assert "REJECTED" in out and "not moved" in out
    bad = json.loads((root / "artifacts/publish/receipt.json").read_text())
    assert bad["outcome"] == "rejected" and bad["baseline"]["map"] == 1.0
    store = registry.open_store(store_uri)
    assert registry.get_alias(store, "m", "production").version == good["version"]
    assert f"against {good['version']}" in out and "failing checks: map" in out
    shown = registry.show(store, "m", bad["version"])  # `tagsmith registry show <version>`
    assert shown["published"] is False and shown["gate"]["compared_with"] == good["version"]
    assert "map" in shown["gate"]["gate"]["failed"]

    s = predict.predict(f"{store_uri}/m/{good['version']}", [root / "artifacts/raw/test"],
                        tmp_path / "p.csv", cache_dir=tmp_path / "cache")
    assert s.n_predicted == 12 and s.model_dir == tmp_path / "cache" / "m" / good["version"]
