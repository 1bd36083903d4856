"""Deterministic multi-label splits: iterative stratification, a user test split honoured.

Splits are drawn with the iterative stratification of Sechidis et al. (2011) from the
``iterative-stratification`` package, all folds in one pass, so every label's share is kept in
each split. The algorithm puts a label's last few examples where most are still wanted, which
can leave a rare label out of val or test; ``_cover_rare`` then moves single examples so that
every label with at least one example per split appears in every split.

Inputs must already be in a canonical order (ingest sorts by id): same order + seed => same
splits, bit for bit.

Library only; ``python -m tasks.ingest`` uses it.
"""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import IterativeStratification

SPLITS = ("train", "val", "test")


def _stratify(y: np.ndarray, shares: dict[str, float], rng: np.random.RandomState) -> np.ndarray:
    """Assign each row of ``y`` to one of ``shares`` (names -> positive fractions summing to 1)."""
    names = [k for k, v in shares.items() if v > 0]
    if len(y) == 0 or len(names) == 1:
        return np.array([names[0]] * len(y), dtype=object)
    r = np.array([shares[k] for k in names], dtype=float)
    order = np.arange(len(y))
    rng.shuffle(order)  # as MultilabelStratifiedShuffleSplit does: ties broken over a shuffle
    folds = IterativeStratification(labels=y[order].astype(bool), r=r / r.sum(), random_state=rng)
    out = np.empty(len(y), dtype=object)
    out[order] = np.array(names, dtype=object)[folds]
    return out


def _cover_rare(y: np.ndarray, split: np.ndarray, movable: list[str]) -> None:
    """Move single rows (in place) so each label appears in every ``movable`` split when it has
    at least ``len(movable)`` examples there in total. A row moves only from a split that keeps
    other examples of each of its labels; the lightest such row (fewest labels, lowest index)."""
    for j in range(y.shape[1]):
        for dst in movable:
            pool = [s for s in movable if s != dst]
            counts = {s: int(y[split == s, j].sum()) for s in movable}
            if counts[dst] > 0 or sum(counts.values()) < len(movable):
                continue
            for src in sorted(pool, key=lambda s: -counts[s]):
                in_src = y[split == src].sum(axis=0)
                cands = [
                    i for i in np.flatnonzero((split == src) & (y[:, j] > 0))
                    if all(in_src[k] > 1 for k in np.flatnonzero(y[i]))
                ]
                if cands:
                    i = min(cands, key=lambda i: (int(y[i].sum()), i))
                    split[i] = dst
                    break


def assign_splits(
    y: np.ndarray,
    fixed_test: np.ndarray,
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> list[str]:
    """Split rows into train/val/test.

    Args:
        y: multi-hot labels, shape [n, classes], rows in canonical (id) order.
        fixed_test: bool [n]; True rows are the user's test split. When any is True, no other
            row goes to test and validation is carved from the rest.
        test_fraction: share of all rows for test (ignored when ``fixed_test`` has any True).
        val_fraction: share of the non-test rows for validation.
        seed: seeds the tie-breaking.

    Returns:
        One of ``"train"``, ``"val"``, ``"test"`` per row.
    """
    y = np.asarray(y, dtype=np.int64)
    fixed_test = np.asarray(fixed_test, dtype=bool)
    rng = np.random.RandomState(seed)
    split = np.empty(len(y), dtype=object)
    if fixed_test.any():
        split[fixed_test] = "test"
        rest = ~fixed_test
        shares = {"train": 1.0 - val_fraction, "val": val_fraction}
        split[rest] = _stratify(y[rest], shares, rng)
        movable = [k for k, v in shares.items() if v > 0]
        sub = split[rest].copy()
        _cover_rare(y[rest], sub, movable)
        split[rest] = sub
    else:
        train = (1.0 - test_fraction) * (1.0 - val_fraction)
        shares = {"train": train, "val": (1.0 - test_fraction) * val_fraction, "test": test_fraction}
        split[:] = _stratify(y, shares, rng)
        _cover_rare(y, split, [k for k, v in shares.items() if v > 0])
    return [str(s) for s in split]


def split_stats(y: np.ndarray, split: list[str], classes: list[str]) -> dict:
    """Per-split counts, per-class counts and label cardinality.

    Args:
        y: multi-hot labels [n, classes].
        split: split name per row.
        classes: class names, index order.

    Returns:
        ``{"counts": {split: n}, "per_class": {split: {class: n}}, "cardinality": {split|"all":
        mean labels per image}, "missing": {split: [classes absent there]}}``.
    """
    y = np.asarray(y, dtype=np.int64).reshape(len(split), len(classes))
    s = np.asarray(split, dtype=object)
    out: dict = {"counts": {}, "per_class": {}, "cardinality": {}, "missing": {}}
    for name in SPLITS:
        m = s == name
        col = y[m].sum(axis=0)
        out["counts"][name] = int(m.sum())
        out["per_class"][name] = {c: int(col[i]) for i, c in enumerate(classes)}
        out["cardinality"][name] = round(float(y[m].sum(axis=1).mean()), 4) if m.any() else 0.0
        out["missing"][name] = [c for i, c in enumerate(classes) if col[i] == 0 and m.any()]
    out["cardinality"]["all"] = round(float(y.sum(axis=1).mean()), 4) if len(y) else 0.0
    return out


def plot_cooccurrence(y: np.ndarray, classes: list[str], path) -> None:
    """Save the label co-occurrence matrix (diagonal = class counts) as a deterministic PNG.

    Args:
        y: multi-hot labels [n, classes] of the kept images.
        classes: class names, index order.
        path: where to write the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=np.int64).reshape(-1, len(classes))
    co = y.T @ y
    side = min(4 + 0.3 * len(classes), 30)
    fig, ax = plt.subplots(figsize=(side, side), dpi=80)
    im = ax.imshow(np.log1p(co), cmap="viridis")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_title(f"Label co-occurrence (log1p count), {len(y)} images")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    # No "Software" (version) or date chunk: the same labels must give the same bytes.
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
