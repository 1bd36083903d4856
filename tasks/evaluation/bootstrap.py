"""Paired bootstrap of a mAP difference over test images (pure numpy, no I/O).

Both models are scored on the same test images, so the images are resampled once and both
models' mAP is computed on each resample: the spread of the difference then reflects which
images happened to be in the test split, not the two models' independent noise (the paired
design of Dietterich 1998 / Efron & Tibshirani ch. 16). A resample is a vector of
multiplicities (how often each image was drawn), and average precision is computed with
those multiplicities as sample weights, exactly as scikit-learn's
``average_precision_score(..., sample_weight=w)`` does (ties included; a test checks it),
for every resample at once.

Used by the publish gate (tasks/evaluation/gate.py).
"""

from __future__ import annotations

import numpy as np

CHUNK = 200  # resamples per vectorised block: bounds memory to CHUNK x n_images floats


def weighted_ap(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision of one class under each row of ``weights``.

    Args:
        y: {0,1} labels [n].
        s: scores [n].
        weights: sample weights [B, n] (bootstrap multiplicities).
    Returns:
        AP per row [B]; NaN where a row gives the class no positive weight.
    """
    order = np.argsort(s, kind="mergesort")[::-1]  # scikit-learn's order: descending, stable
    ys, ss = y[order].astype(np.float64), s[order]
    ends = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # last index of each tied score
    w = weights[:, order]
    tp = np.cumsum(w * ys, axis=1)[:, ends]
    fp = np.cumsum(w * (1.0 - ys), axis=1)[:, ends]
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / total
    d_recall = np.diff(recall, axis=1, prepend=0.0)
    ap = np.sum(d_recall * precision, axis=1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def weighted_map(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """mAP [B] over the classes with positive weight in each resample (as metrics.mean_ap)."""
    per_class = np.stack([weighted_ap(y[:, k], s[:, k], weights) for k in range(y.shape[1])], axis=1)
    with np.errstate(invalid="ignore"):
        return np.nanmean(per_class, axis=1)


def paired_map_deltas(y: np.ndarray, s_candidate: np.ndarray, s_baseline: np.ndarray,
                      samples: int, seed: int) -> np.ndarray:
    """mAP(candidate) - mAP(baseline) on ``samples`` paired bootstrap resamples of the images.

    Args:
        y: multi-hot labels [n, c].
        s_candidate, s_baseline: both models' scores on the same images [n, c].
        samples: number of resamples.
        seed: the resampling seed (same inputs and seed: same deltas).
    Returns:
        float array [samples].
    """
    y = (np.asarray(y) > 0.5).astype(np.int64)
    n = len(y)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, samples, CHUNK):
        b = min(CHUNK, samples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        out.append(weighted_map(y, s_candidate, weights) - weighted_map(y, s_baseline, weights))
    return np.concatenate(out)


def lower_bound(deltas: np.ndarray, confidence: float) -> float:
    """One-sided lower confidence bound (percentile method) of the difference."""
    return float(np.quantile(deltas, 1.0 - confidence))
