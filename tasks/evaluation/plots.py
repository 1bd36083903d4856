"""The evaluate stage's PNG plots (matplotlib, Agg backend, byte-deterministic output).

``savefig(metadata={"Software": None})`` drops the matplotlib version stamp, so identical
inputs give identical bytes (DVC then sees no spurious change).

Library only; no command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
import numpy as np  # noqa: E402

_SAVE = {"dpi": 100, "metadata": {"Software": None}}


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", **_SAVE)
    plt.close(fig)


def plot_pr_curves(points: list[tuple[str, float, float]], aps: dict[str, float], path: Path) -> None:
    """All per-class precision-recall curves in one axes, legend with each class's AP.

    Args:
        points: (class, recall, precision) in long format (metrics.pr_curve_points).
        aps: class -> AP, for the legend.
        path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(7, 5))
    for name in sorted({p[0] for p in points}):
        r = [p[1] for p in points if p[0] == name]
        pr = [p[2] for p in points if p[0] == name]
        ax.plot(r, pr, drawstyle="steps-post", linewidth=1, label=f"{name} (AP {aps[name]:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Test PR curves")
    if points:
        ax.legend(fontsize=6, loc="lower left", ncol=2)
    _save(fig, path)


def plot_ap_bars(classes: list[str], ap: np.ndarray, m_ap: float, path: Path) -> None:
    """Per-class AP bars, sorted ascending so the weakest classes come first; mAP as a line.

    Args:
        classes: class names.
        ap: AP per class (NaN = no test positive, shown as an empty slot labelled n/a).
        m_ap: the mean, drawn as a reference line.
        path: the PNG to write.
    """
    order = sorted(range(len(classes)), key=lambda k: (np.nan_to_num(ap[k], nan=2.0), classes[k]))
    vals = [0.0 if np.isnan(ap[k]) else float(ap[k]) for k in order]
    names = [classes[k] + (" (n/a)" if np.isnan(ap[k]) else "") for k in order]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(classes) + 1)))
    ax.barh(range(len(vals)), vals, color="tab:blue")
    ax.axvline(m_ap, color="tab:red", linestyle="--", label=f"mAP {m_ap:.3f}")
    ax.set_yticks(range(len(vals)), names, fontsize=7)
    ax.set(xlabel="average precision", xlim=(0, 1), title="AP per class (test)")
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)


def plot_label_counts(classes: list[str], y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> None:
    """Predicted vs true label counts: per class, and labels per image.

    Args:
        classes: class names.
        y_true: test multi-hot labels [n, c].
        y_pred: thresholded predictions [n, c].
        path: the PNG to write.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(classes))
    a1.bar(x - 0.2, y_true.sum(axis=0), width=0.4, label="true")
    a1.bar(x + 0.2, y_pred.sum(axis=0), width=0.4, label="predicted")
    a1.set_xticks(x, classes, rotation=90, fontsize=6)
    a1.set(ylabel="images", title="Images per class (test)")
    a1.legend(fontsize=7)
    top = int(max(y_true.sum(axis=1).max(initial=0), y_pred.sum(axis=1).max(initial=0)))
    bins = np.arange(top + 2)
    a2.hist([y_true.sum(axis=1), y_pred.sum(axis=1)], bins=bins - 0.5, label=["true", "predicted"])
    a2.set(xlabel="labels per image", ylabel="images", title="Labels per image (test)")
    a2.set_xticks(bins[:-1])
    a2.legend(fontsize=7)
    _save(fig, path)
