"""Deterministic multi-label splits that never move: iterative stratification toward each
label's deficit, near-duplicate groups kept together, a user test split honoured.

Images that already have a split (the ledger's, ``tasks/splits/ledger.py``) keep it. Only new
images are assigned, with the iterative stratification of Sechidis et al. (2011), driven by
desired counts that account for the images already placed: for split s and label j the
desired count is ``share_s * (all images with j) - (images with j already in s)``, so each
label's split shares drift back toward the targets as the data grows. The unit of assignment
is a group of near-duplicates, which lands whole in one split. (The ``iterative-stratification``
package computes its desired counts from the rows it is given and has no groups, hence the
loop below, which follows its tie-breaking: largest label deficit, then largest size deficit,
then random.) The algorithm puts a label's last few examples where most are still wanted,
which can leave a rare label out of val or test; ``_cover_rare`` then moves single new
images so that every label with at least one example per split appears in every split.

Inputs must already be in a canonical order (ingest sorts by id): same order + seed => same
splits, bit for bit.

Library only; ``python -m tasks.ingest`` uses it.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
# A group touching several splits joins the first of these: a near-duplicate of an image a
# model trained on must not be scored as unseen, and val before test for the same reason.
PROTECTIVE = ("train", "val", "test")


def _pick(scores: list[np.ndarray], rng: np.random.RandomState) -> int:
    """Index of the best candidate: highest ``scores[0]``, ties by the next score, then random."""
    cand = np.arange(len(scores[0]))
    for sc in scores:
        best = sc[cand].max()
        cand = cand[sc[cand] == best]
    return int(cand[rng.choice(len(cand))]) if len(cand) > 1 else int(cand[0])


def _stratify_units(counts: np.ndarray, sizes: np.ndarray, want_labels: np.ndarray,
                    want_sizes: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Sechidis' iterative stratification over units (groups) with given desired counts.

    Args:
        counts: [units, labels] examples of each label in each unit.
        sizes: [units] images per unit.
        want_labels: [splits, labels] desired examples still missing (may be negative); a
            split that must get nothing is ``-inf``.
        want_sizes: [splits] desired images still missing (``-inf``: none).
        rng: tie-breaking.

    Returns:
        Split index per unit.
    """
    d_lab, d_size = want_labels.astype(float).copy(), want_sizes.astype(float).copy()
    out = np.full(len(counts), -1, dtype=np.int64)
    left = np.ones(len(counts), dtype=bool)
    has = counts > 0
    while left.any():
        remaining = has[left].sum(axis=0)
        if remaining.sum() == 0:  # only units without labels: fill the emptiest splits
            for u in np.flatnonzero(left):
                s = _pick([d_size], rng)
                out[u], d_size[s] = s, d_size[s] - sizes[u]
            break
        j = _pick([-np.where(remaining > 0, remaining, np.iinfo(np.int64).max)], rng)
        for u in np.flatnonzero(left & has[:, j]):
            s = _pick([d_lab[:, j], d_size], rng)
            out[u], left[u] = s, False
            d_lab[s] -= counts[u]
            d_size[s] -= sizes[u]
    return out


def _cover_rare(y: np.ndarray, split: np.ndarray, movable: list[str], rows: np.ndarray) -> None:
    """Move single rows (in place) so each label appears in every ``movable`` split when it has
    at least ``len(movable)`` examples there in total. Only rows where ``rows`` is True move, and
    only from a split that keeps other examples of each of their labels; the lightest such row
    (fewest labels, lowest index)."""
    for j in range(y.shape[1]):
        for dst in movable:
            pool = [s for s in movable if s != dst]
            counts = {s: int(y[split == s, j].sum()) for s in movable}
            if counts[dst] > 0 or sum(counts.values()) < len(movable):
                continue
            for src in sorted(pool, key=lambda s: -counts[s]):
                in_src = y[split == src].sum(axis=0)
                cands = [
                    i for i in np.flatnonzero((split == src) & (y[:, j] > 0) & rows)
                    if all(in_src[k] > 1 for k in np.flatnonzero(y[i]))
                ]
                if cands:
                    i = min(cands, key=lambda i: (int(y[i].sum()), i))
                    split[i] = dst
                    break


def inherited_splits(groups: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The split each row's group already holds: the most protective known split among its
    members (train, then val, then test), or "" when no member has one.

    Args:
        groups: group id per row.
        known: split per row, "" where none.
    """
    rank = {s: i for i, s in enumerate(PROTECTIVE)}
    best: dict[int, str] = {}
    for g, s in zip(groups.tolist(), known.tolist()):
        if s and (g not in best or rank[s] < rank[best[g]]):
            best[g] = s
    return np.array([best.get(g, "") for g in groups.tolist()], dtype=object)


def assign_splits(
    y: np.ndarray,
    fixed_test: np.ndarray,
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    known: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> list[str]:
    """Split rows into train/val/test; rows with a known split keep it.

    Args:
        y: multi-hot labels, shape [n, classes], rows in canonical (id) order.
        fixed_test: bool [n]; True rows are the user's test split (unless ``known`` says
            otherwise). When any is True, no other new row goes to test and validation is
            carved from the rest.
        test_fraction: target share of all rows for test (ignored when ``fixed_test`` has any True).
        val_fraction: target share of the non-test rows for validation.
        seed: seeds the tie-breaking.
        known: split per row already decided ("" for a new row): the ledger's, or the one its
            near-duplicate group holds (``inherited_splits``). Never changed.
        groups: group id per row; the new rows of a group land in one split.

    Returns:
        One of ``"train"``, ``"val"``, ``"test"`` per row.
    """
    y = np.asarray(y, dtype=np.int64).reshape(len(fixed_test), -1)
    fixed_test = np.asarray(fixed_test, dtype=bool)
    n = len(y)
    split = np.array([""] * n if known is None else list(known), dtype=object)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    rng = np.random.RandomState(seed)
    new = split == ""
    # a new group with a member the user named goes to test whole (the user's list wins)
    named = set(groups[new & fixed_test].tolist())
    split[new & np.isin(groups, list(named))] = "test"
    if fixed_test.any():
        shares = {"train": 1.0 - val_fraction, "val": val_fraction, "test": 0.0}
    else:
        train = (1.0 - test_fraction) * (1.0 - val_fraction)
        shares = {"train": train, "val": (1.0 - test_fraction) * val_fraction, "test": test_fraction}
    pending = split == ""
    pop = pending | np.isin(split, [s for s, v in shares.items() if v > 0])
    r = np.array([shares[s] for s in SPLITS])
    placed = np.stack([y[pop & (split == s)].sum(axis=0) for s in SPLITS])
    want_labels = np.outer(r, y[pop].sum(axis=0)) - placed
    want_sizes = r * pop.sum() - np.array([(pop & (split == s)).sum() for s in SPLITS])
    want_labels[r == 0] = -np.inf
    want_sizes[r == 0] = -np.inf
    units, inverse = np.unique(groups[pending], return_inverse=True)
    if len(units):
        counts = np.zeros((len(units), y.shape[1]), dtype=np.int64)
        np.add.at(counts, inverse, y[pending])
        sizes = np.bincount(inverse, minlength=len(units))
        order = rng.permutation(len(units))  # ties broken over a shuffle, as the library does
        chosen = np.empty(len(units), dtype=np.int64)
        chosen[order] = _stratify_units(counts[order], sizes[order], want_labels, want_sizes, rng)
        split[np.flatnonzero(pending)] = np.array(SPLITS, dtype=object)[chosen[inverse]]
    _, gidx = np.unique(groups, return_inverse=True)
    single = np.bincount(gidx)[gidx] == 1  # moving one image out of its group would split it
    _cover_rare(y, split, [s for s, v in shares.items() if v > 0], pending & single & ~fixed_test)
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
