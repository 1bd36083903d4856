"""Multi-label metrics as plain numpy/scikit-learn functions (no TensorFlow, no I/O).

Conventions: ``y_true`` is a multi-hot {0,1} array [n_images, n_classes], ``scores`` the
model's sigmoid outputs of the same shape, ``thresholds`` one float per class; a class is
predicted when ``score >= threshold``.

Definitions (those of the reference study where it has one):
- P@1 ("top-1 accuracy"): share of images whose highest-scoring class is one of its labels.
- mAP: mean over classes of non-interpolated average precision (sklearn's
  ``average_precision_score`` per class); classes with no positive in ``y_true`` have no AP
  and are left out of the mean (``ap_per_class`` returns NaN for them).
- Thresholds: per class, the score that maximises F1 on the validation split; classes with
  no validation positive get the default threshold.

Used by tasks/evaluate.py and tasks/publish.py (the gate computes mAP the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
)


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and return (int multi-hot, float scores)."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be the same 2-D shape")
    return (y > 0.5).astype(np.int64), s


def p_at_1(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Share of images whose top-scoring class is a true label (images without labels miss).

    Args:
        y_true: multi-hot labels [n, c].
        scores: scores [n, c].
    Returns:
        P@1 in [0, 1]; 0.0 for an empty set.
    """
    y, s = _check(y_true, scores)
    if len(y) == 0:
        return 0.0
    top = np.argmax(s, axis=1)  # ties: the lowest class index, deterministic
    return float(np.mean(y[np.arange(len(y)), top]))


def ap_per_class(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Non-interpolated average precision of each class; NaN where a class has no positive.

    Args:
        y_true: multi-hot labels [n, c].
        scores: scores [n, c].
    Returns:
        float array [c].
    """
    y, s = _check(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        if y[:, k].sum() > 0:
            out[k] = average_precision_score(y[:, k], s[:, k])
    return out


def mean_ap(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, list[int]]:
    """mAP over the classes that have positives.

    Args:
        y_true: multi-hot labels [n, c].
        scores: scores [n, c].
    Returns:
        (mAP, indices of the classes left out because they have no positive); mAP is 0.0
        when no class has a positive.
    """
    ap = ap_per_class(y_true, scores)
    excluded = [int(k) for k in np.flatnonzero(np.isnan(ap))]
    return (float(np.nanmean(ap)) if len(excluded) < len(ap) else 0.0), excluded


def tune_thresholds(
    y_val: np.ndarray, s_val: np.ndarray, default: float
) -> tuple[np.ndarray, list[bool]]:
    """Per-class threshold that maximises F1 on validation.

    Args:
        y_val: validation multi-hot labels [n, c].
        s_val: validation scores [n, c].
        default: threshold for classes with no validation positive.
    Returns:
        (thresholds [c], tuned flags [c]: False where ``default`` was used).
    """
    y, s = _check(y_val, s_val)
    thr = np.full(y.shape[1], float(default))
    tuned = [False] * y.shape[1]
    for k in range(y.shape[1]):
        if y[:, k].sum() == 0:
            continue
        prec, rec, cuts = precision_recall_curve(y[:, k], s[:, k])
        # The last (precision=1, recall=0) point has no threshold; drop it.
        prec, rec = prec[:-1], rec[:-1]
        denom = prec + rec
        f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(denom), where=denom > 0)
        thr[k] = float(cuts[int(np.argmax(f1))])  # first max = the lowest such cut
        tuned[k] = True
    return thr, tuned


def binarize(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Predicted multi-hot labels: ``score >= threshold`` per class."""
    return (np.asarray(scores) >= np.asarray(thresholds)[None, :]).astype(np.int64)


def summary_metrics(
    y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray
) -> dict[str, float]:
    """All headline numbers of one split, flat (for metrics.json).

    Macro averages run over the classes that have a positive in ``y_true`` (like mAP).

    Args:
        y_true: multi-hot labels [n, c].
        scores: scores [n, c].
        thresholds: per-class thresholds [c].
    Returns:
        {"p_at_1", "map", "micro_precision", "micro_recall", "micro_f1", "macro_precision",
         "macro_recall", "macro_f1", "subset_accuracy", "hamming_loss", "n_images",
         "n_classes", "n_classes_evaluated"} (precision/recall are also given as the micro
         values under "precision"/"recall").
    """
    y, s = _check(y_true, scores)
    pred = binarize(s, thresholds)
    m_ap, excluded = mean_ap(y, s)
    present = [k for k in range(y.shape[1]) if k not in set(excluded)]
    kw: dict[str, Any] = {"zero_division": 0}
    out = {
        "p_at_1": p_at_1(y, s),
        "map": m_ap,
        "micro_precision": precision_score(y, pred, average="micro", **kw),
        "micro_recall": recall_score(y, pred, average="micro", **kw),
        "micro_f1": f1_score(y, pred, average="micro", **kw),
        "macro_precision": precision_score(y, pred, average="macro", labels=present, **kw)
        if present else 0.0,
        "macro_recall": recall_score(y, pred, average="macro", labels=present, **kw)
        if present else 0.0,
        "macro_f1": f1_score(y, pred, average="macro", labels=present, **kw) if present else 0.0,
        "subset_accuracy": float(np.mean(np.all(y == pred, axis=1))) if len(y) else 0.0,
        "hamming_loss": hamming_loss(y, pred) if len(y) else 0.0,
        "n_images": len(y),
        "n_classes": y.shape[1],
        "n_classes_evaluated": len(present),
    }
    out["precision"], out["recall"] = out["micro_precision"], out["micro_recall"]
    return {k: (int(v) if k.startswith("n_") else float(v)) for k, v in out.items()}


def per_class_rows(
    classes: list[str],
    y_true: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray,
    tuned: list[bool],
) -> list[dict[str, Any]]:
    """One row per class: support, AP, threshold, precision/recall/F1 at it, counts.

    Returns:
        rows in class-index order; "ap" is NaN for classes without a positive.
    """
    y, s = _check(y_true, scores)
    pred = binarize(s, thresholds)
    ap = ap_per_class(y, s)
    rows = []
    for k, name in enumerate(classes):
        tp = int(np.sum((pred[:, k] == 1) & (y[:, k] == 1)))
        n_pred, n_true = int(pred[:, k].sum()), int(y[:, k].sum())
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        rows.append({
            "class": name, "support": n_true, "predicted": n_pred, "ap": float(ap[k]),
            "threshold": float(thresholds[k]), "threshold_tuned": bool(tuned[k]),
            "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
        })
    return rows


def pr_curve_points(
    classes: list[str], y_true: np.ndarray, scores: np.ndarray, max_points: int = 50
) -> list[tuple[str, float, float]]:
    """Per-class precision/recall curves in long format, downsampled for plotting.

    Args:
        classes: class names.
        y_true: multi-hot labels [n, c].
        scores: scores [n, c].
        max_points: at most this many points per class (evenly spaced, ends kept).
    Returns:
        (class, recall, precision) tuples; classes without a positive are skipped.
    """
    y, s = _check(y_true, scores)
    out = []
    for k, name in enumerate(classes):
        if y[:, k].sum() == 0:
            continue
        prec, rec, _ = precision_recall_curve(y[:, k], s[:, k])
        idx = np.unique(np.linspace(0, len(prec) - 1, min(max_points, len(prec))).round().astype(int))
        out.extend((name, float(rec[i]), float(prec[i])) for i in idx[::-1])  # recall ascending
    return out
