"""The evaluate stage on tiny shards: every report file, honest numbers, byte determinism."""

import csv
import json

import numpy as np
import pytest

from tasks import evaluate
from tasks.common.config import EvaluateConfig

from tests.model.evalkit import CLASSES, make_model, make_shards

OUTPUTS = ["metrics.json", "per_class.csv", "thresholds.json", "predictions.csv", "pr_curves.csv",
           "pr_curves.png", "ap_per_class.png", "label_count.png", "model_card.md"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    shards = make_shards(root)
    model = make_model(root / "model")
    cfg = EvaluateConfig(batch_size=5)
    first = evaluate.run(cfg, model, shards, root / "eval1")
    evaluate.run(cfg, model, shards, root / "eval2")
    return root, first


def test_writes_every_report_file(evaluated):
    root, _ = evaluated
    for name in OUTPUTS:
        assert (root / "eval1" / name).stat().st_size > 0, name


def test_outputs_are_byte_identical_across_runs(evaluated):
    root, _ = evaluated
    for name in OUTPUTS:
        assert (root / "eval1" / name).read_bytes() == (root / "eval2" / name).read_bytes(), name


def test_metrics_json_is_flat_and_the_quadrant_model_is_perfect(evaluated):
    root, summary = evaluated
    m = json.loads((root / "eval1" / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) for v in m.values())
    assert {"p_at_1", "map", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss",
            "precision", "recall", "n_images"} <= set(m)
    assert m["map"] == 1.0 and m["p_at_1"] == 1.0 and m["n_images"] == 12
    assert summary.metrics == m


def test_map_recomputes_from_predictions_csv(evaluated, tmp_path):
    root, _ = evaluated
    bad = make_model(tmp_path / "bad", sign=-1.0)
    evaluate.run(EvaluateConfig(batch_size=5), bad, root / "shards", tmp_path / "eval")
    with open(tmp_path / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [f"img{i:03d}" for i in range(12)]
    scores = np.array([[float(r[c]) for c in CLASSES] for r in rows])
    classes_json = json.loads((root / "eval1" / "thresholds.json").read_text())["classes"]
    assert classes_json == CLASSES
    per_class = list(csv.DictReader(open(tmp_path / "eval" / "per_class.csv")))
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["map"] < 0.7  # the flipped model ranks negatives first
    aps = [float(r["ap"]) for r in per_class if r["ap"]]
    assert m["map"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert scores.shape == (12, 4)


def test_thresholds_come_from_validation(evaluated):
    root, _ = evaluated
    t = json.loads((root / "eval1" / "thresholds.json").read_text())
    assert len(t["thresholds"]) == 4 and all(t["tuned"])
    assert all(0.0 < x < 1.0 for x in t["thresholds"])


def test_model_card_has_data_version_and_weakest_classes(evaluated):
    root, _ = evaluated
    card = (root / "eval1" / "model_card.md").read_text()
    assert "shards index sha256" in card and "Weakest classes" in card and "| map |" in card
    assert str(root) not in card
    # how to call the published model with image files (TF Serving REST, serving_bytes)
    assert '{"signature_name": "serving_bytes", "instances": [{"b64": "%s"}]}' in card
    assert "image preparation: channel_order RGB, image_size 32, jpeg_quality 95, resize stretch" in card
