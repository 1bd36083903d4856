"""Predicting from raw image files reproduces evaluate's test scores (same preprocessing as
the shards), uses the published thresholds, and skips unreadable files with a reason."""

import csv
import json

import pytest

from tasks import evaluate, publish
from tasks.serving import predict
from tasks.common.config import EvaluateConfig, PublishConfig
from tests.model.evalkit import CLASSES, make_model, make_shards


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    shards = make_shards(root)
    make_model(root / "model", sign=1.0)
    evaluate.run(EvaluateConfig(batch_size=8), root / "model", shards, root / "eval")
    cfg = PublishConfig(store=str(root / "registry"), model_name="m")
    receipt = publish.run(cfg, root / "model", shards, root / "eval", root / "publish").receipt
    return root, receipt


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scores_match_evaluate_within_1e4_and_broken_files_are_skipped(published, tmp_path):
    root, _ = published
    broken = tmp_path / "zz_broken.jpg"
    broken.write_bytes(b"plain text, not a picture")
    s = predict.predict("production", [root / "raw" / "test", broken], tmp_path / "p.csv",
                        batch_size=5, store=str(root / "registry"), model_name="m")
    assert (s.n_inputs, s.n_predicted) == (13, 12)
    assert s.failures == [(str(broken), "not_an_image")]
    assert s.thresholds_source == "metadata.json"
    ours = {row["file"].rsplit("/", 1)[1].removesuffix(".png"): row for row in read(tmp_path / "p.csv")}
    theirs = {row["id"]: row for row in read(root / "eval" / "predictions.csv")}
    assert set(ours) == set(theirs)
    for i, row in theirs.items():
        for c in CLASSES:
            assert abs(float(ours[i][c]) - float(row[c])) <= 1e-4, (i, c)


def test_labels_use_the_tuned_thresholds(published, tmp_path):
    root, receipt = published
    version_dir = root / "registry" / "m" / receipt["version"]
    s = predict.predict(str(version_dir), [root / "raw" / "test"], tmp_path / "p.csv")
    assert s.n_predicted == 12
    thr = json.loads((version_dir / "thresholds.json").read_text())["thresholds"]
    assert thr != [0.5] * 4
    for row in read(tmp_path / "p.csv"):
        expected = [c for c, t in zip(CLASSES, thr) if float(row[c]) >= t]
        assert row["labels"] == ";".join(expected)


def test_plain_model_folder_and_unknown_alias(published, tmp_path):
    root, _ = published
    s = predict.predict(str(root / "model"), [root / "raw" / "val"], tmp_path / "p.csv")
    assert s.n_predicted == 10 and s.thresholds_source.startswith("default")
    with pytest.raises(Exception, match="neither a complete version nor an alias"):
        predict.predict("staging", [root / "raw" / "val"], tmp_path / "q.csv",
                        store=str(root / "registry"), model_name="m")
