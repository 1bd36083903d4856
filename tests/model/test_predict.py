"""Predicting from raw image files reproduces evaluate's test scores (same preprocessing as
the shards), uses the published thresholds, and skips unreadable files with a reason; the
published SavedModel's serving_bytes signature gives predict's scores from the files' bytes;
a model folder that does not say how to prepare images is refused."""

import csv
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tasks import evaluate, publish
from tasks.common.config import EvaluateConfig, PublishConfig, RegistryConfig
from tasks.serving import predict
from tests.model.evalkit import CLASSES, make_model, make_shards


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    shards = make_shards(root)
    make_model(root / "model", sign=1.0)
    evaluate.run(EvaluateConfig(batch_size=8), root / "model", shards, root / "eval")
    reg = RegistryConfig(store=str(root / "registry"), model_name="m")
    receipt = publish.run(PublishConfig(), root / "model", shards, root / "eval", root / "publish", reg=reg,
                          splits_ledger=None).receipt
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


def test_serving_bytes_signature_gives_predicts_scores(published, tmp_path):
    root, receipt = published
    version_dir = root / "registry" / "m" / receipt["version"]
    rng = np.random.default_rng(7)
    files = sorted((root / "raw" / "test").glob("*.png"))[:3]  # PNG, square
    wide = rng.integers(0, 256, (37, 90, 3)).astype(np.uint8)
    wide[5:30, 50:85] = 230
    Image.fromarray(wide).save(tmp_path / "wide.jpg", quality=90)  # JPEG, not square
    Image.fromarray(rng.integers(0, 256, (70, 41, 4)).astype(np.uint8)).save(tmp_path / "tall_rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo held upright: stored sideways, to be turned 90 degrees
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", quality=90, exif=exif.tobytes())
    files += [tmp_path / "wide.jpg", tmp_path / "tall_rgba.png", tmp_path / "rotated.jpg"]
    predict.predict(str(version_dir), files, tmp_path / "p.csv")
    expected = np.array([[float(row[c]) for c in CLASSES] for row in read(tmp_path / "p.csv")])

    served = tf.saved_model.load(str(version_dir / "saved_model")).signatures["serving_bytes"]
    out = served(images=tf.constant([f.read_bytes() for f in files]))
    scores = next(iter(out.values())).numpy()
    assert scores.shape == (len(files), len(CLASSES))
    assert np.abs(scores - expected).max() <= 1e-4


def test_model_folder_without_preprocess_is_refused(published, tmp_path):
    root, _ = published
    folder = tmp_path / "old_model"
    shutil.copytree(root / "model", folder)
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["preprocess"]["resize"], meta["preprocess"]["jpeg_quality"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"old_model.*lacks \['resize', 'jpeg_quality'\]"):
        predict.predict(str(folder), [root / "raw" / "val"], tmp_path / "p.csv")
