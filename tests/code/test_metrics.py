"""Pins the metric definitions of tasks/evaluation/metrics.py against hand-worked and sklearn values."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tasks.evaluation import metrics

Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
S = np.array([[0.9, 0.2, 0.1], [0.6, 0.5, 0.3], [0.4, 0.8, 0.2], [0.1, 0.3, 0.7]])


def test_p_at_1_counts_top_class_hits_over_all_images():
    # image 0 top=0 hit, image 1 top=0 miss, image 2 top=1 hit, image 3 (no labels) miss
    assert metrics.p_at_1(Y, S) == pytest.approx(0.5)


def test_map_equals_sklearn_per_class_mean_and_excludes_classes_without_positives():
    m, excluded = metrics.mean_ap(Y, S)
    expected = np.mean([average_precision_score(Y[:, k], S[:, k]) for k in (0, 1)])
    assert excluded == [2]
    assert m == pytest.approx(expected)
    assert np.isnan(metrics.ap_per_class(Y, S)[2])


def test_map_is_non_interpolated_average_precision():
    # ranks: pos, neg, pos -> AP = (1/1 + 2/3) / 2
    y = np.array([[1], [0], [1]])
    s = np.array([[0.9], [0.8], [0.7]])
    assert metrics.mean_ap(y, s)[0] == pytest.approx((1 + 2 / 3) / 2)


def test_thresholds_maximise_validation_f1_and_default_for_absent_classes():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    s = np.array([[0.9, 0.1], [0.3, 0.2], [0.35, 0.3], [0.1, 0.4]])
    thr, tuned = metrics.tune_thresholds(y, s, default=0.5)
    # best F1 for class 0: cut at 0.3 gives P=2/3,R=1 (F1=.8) vs cut at 0.9 (P=1,R=.5, F1=.67)
    assert thr[0] == pytest.approx(0.3)
    assert thr[1] == 0.5 and tuned == [True, False]


def test_summary_metrics_at_thresholds():
    thr = np.array([0.5, 0.5, 0.5])
    m = metrics.summary_metrics(Y, S, thr)
    pred = metrics.binarize(S, thr)
    assert pred.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # tp=3 (0/0, 1/1, 2/1), predicted 5, true 4
    assert m["micro_precision"] == pytest.approx(3 / 5)
    assert m["micro_recall"] == pytest.approx(3 / 4)
    assert m["subset_accuracy"] == pytest.approx(1 / 4)
    assert m["hamming_loss"] == pytest.approx(3 / 12)
    assert m["n_images"] == 4 and m["n_classes_evaluated"] == 2
    # macro over classes 0 and 1 only (class 2 has no positive): F1 0.5 and 1.0
    assert m["macro_f1"] == pytest.approx(0.75)


def test_per_class_rows_and_pr_points_cover_classes():
    thr = np.array([0.5, 0.5, 0.5])
    rows = metrics.per_class_rows(["a", "b", "c"], Y, S, thr, [True, True, False])
    assert [r["support"] for r in rows] == [2, 2, 0]
    assert rows[2]["predicted"] == 1 and rows[2]["precision"] == 0.0
    pts = metrics.pr_curve_points(["a", "b", "c"], Y, S, max_points=3)
    assert {p[0] for p in pts} == {"a", "b"}
    assert sum(p[0] == "a" for p in pts) <= 3


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same 2-D shape"):
        metrics.p_at_1(Y, S[:, :2])
