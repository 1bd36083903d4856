"""Training that survives losing its machine: checkpoints on S3 (moto over HTTP).

A run stopped after epoch k is continued in a FRESH workspace (empty local checkpoint folder,
other model folder: another machine) from the checkpoint on S3 and ends with the weights of an
uninterrupted run; a checkpoint cut off by the endpoint going away fails the run and is never
resumed from; the checkpoints are gone once the stage completes.
"""

from __future__ import annotations

import os
import uuid

import boto3
import numpy as np
import pytest

from tasks import train
from tasks.model.checkpoints import MANIFEST, RemoteCheckpoints
from tasks.common.config import TrainFrozenConfig
from tasks.model.build import load_model
from tasks.registry.stores import RegistryError, S3Options, S3Store
from tests.e2e.moto_s3 import FAKE_AWS, MotoServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # five tiny trainings: ~1.5 min on 2 shared cores

CFG = TrainFrozenConfig(backbone="small_cnn", weights="none", epochs=3, batch_size=4,
                        learning_rate=1e-3, patience=10, dropout=0.1)
FINGERPRINT = "0123abcd"


class Preempted(RuntimeError):
    """Stands in for the node going away right after an epoch was checkpointed."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    old = {k: os.environ.get(k) for k in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    server = MotoServer(tmp_path_factory.mktemp("moto-ckpt") / "moto.log")
    server.start()
    yield server
    server.stop()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def new_store(server: MotoServer) -> S3Store:
    bucket = f"ckpt-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=bucket)
    # small timeouts and few attempts: a dead endpoint fails in seconds, not minutes
    return S3Store(bucket, "tagsmith/dvc/tagsmith-checkpoints",
                   S3Options(endpoint_url=server.url, max_attempts=2, connect_timeout=1, read_timeout=2))


def machine(tmp_path, name: str) -> dict:
    """A workspace of its own: nothing local is shared with another 'machine'."""
    return dict(models_dir=tmp_path / name / "models", checkpoints=tmp_path / name / "ck", verbose=0)


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    train.run("frozen", CFG, shard_dir=tiny_shards, **machine(root, "ref"))
    model, _ = load_model(root / "ref/models/frozen")
    return model.get_weights(), (root / "ref/models/frozen/history.csv").read_text()


def assert_same_as_uninterrupted(models_dir, uninterrupted):
    weights, history = uninterrupted
    model, _ = load_model(models_dir / "frozen")
    for x, y in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(x, y)
    assert (models_dir / "frozen/history.csv").read_text() == history


def test_a_fresh_machine_resumes_from_s3_and_ends_with_the_uninterrupted_weights(
        s3, tiny_shards, tmp_path, uninterrupted, monkeypatch, capsys):
    store = new_store(s3)
    push = RemoteCheckpoints.push

    def push_then_die_after_epoch_2(self, epoch_dir, epoch):
        push(self, epoch_dir, epoch)
        if epoch == 2:
            raise Preempted("node drained")

    with monkeypatch.context() as m:
        m.setattr(RemoteCheckpoints, "push", push_then_die_after_epoch_2)
        with pytest.raises(Preempted):
            train.run("frozen", CFG, shard_dir=tiny_shards, checkpoint_store=store,
                      fingerprint=FINGERPRINT, **machine(tmp_path, "first"))
    prefix = f"train_frozen/{FINGERPRINT}"
    assert f"{prefix}/epoch-0002/{MANIFEST}" in store.list_keys(prefix)
    capsys.readouterr()

    second = machine(tmp_path, "second")
    summary = train.run("frozen", CFG, shard_dir=tiny_shards, checkpoint_store=store,
                        fingerprint=FINGERPRINT, **second)
    out = capsys.readouterr().out
    assert summary.resumed_at == 2 and summary.epochs_run == 3
    assert f"checkpoint epoch 2 <- {store.uri(prefix)}" in out and "epoch 1/3" not in out and "epoch 3/3" in out
    assert_same_as_uninterrupted(second["models_dir"], uninterrupted)
    assert store.list_keys(prefix) == [], "a completed stage leaves no checkpoint behind"
    assert not any(second["checkpoints"].rglob("epoch-*"))


def test_a_checkpoint_cut_off_by_the_endpoint_fails_the_run_and_is_never_resumed_from(
        s3, tiny_shards, tmp_path, uninterrupted, capsys):
    store = new_store(s3)
    prefix = f"train_frozen/{FINGERPRINT}"

    def endpoint_dies_mid_epoch_2(key: str) -> None:
        if "/epoch-0002/" in key:  # epoch 2's first file is stored, the rest never will be
            s3.pause()

    store.after_put = endpoint_dies_mid_epoch_2
    try:
        with pytest.raises(RegistryError, match="epoch-0002"):
            train.run("frozen", CFG, shard_dir=tiny_shards, checkpoint_store=store,
                      fingerprint=FINGERPRINT, **machine(tmp_path, "first"))
    finally:
        s3.resume()
    store.after_put = None
    keys = store.list_keys(prefix)
    assert any("/epoch-0002/" in k for k in keys), "the cut-off upload left part of epoch 2"
    assert f"{prefix}/epoch-0002/{MANIFEST}" not in keys
    capsys.readouterr()

    second = machine(tmp_path, "second")
    summary = train.run("frozen", CFG, shard_dir=tiny_shards, checkpoint_store=store,
                        fingerprint=FINGERPRINT, **second)
    out = capsys.readouterr().out
    assert summary.resumed_at == 1, out  # the last COMPLETE checkpoint, not the partial epoch 2
    assert "checkpoint epoch 1 <-" in out
    assert_same_as_uninterrupted(second["models_dir"], uninterrupted)
    assert store.list_keys(prefix) == []
