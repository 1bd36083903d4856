"""Splits that never move: the ledger, near-duplicate groups and the stratifier put together.

For the images of one data version (and the ledger of every image seen before):

1. an image the ledger lists keeps its split, whatever else happens (so an image a model
   trained or validated on never reaches test);
2. images whose perceptual hashes are within ``near_duplicate_distance`` bits form a group
   (with the ledger's images too, even ones no longer in the data); a new image in a group
   that already holds a split joins it (train before val before test when it holds several);
3. the user's test list puts a new image (and its new near-duplicates) in test;
4. every other new group is placed by stratification toward each label's deficit.

Library only; ``python -m tasks.ingest`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.splits import ledger
from tasks.splits.neardup import group_ids
from tasks.splits.stratify import SPLITS, assign_splits, inherited_splits

EXAMPLES = 10  # groups listed in stats.json


@dataclass(frozen=True)
class Assignment:
    """The splits of one data version and what the ledger becomes."""

    split: list[str]
    entries: dict[str, ledger.Entry]  # the old ledger plus every image assigned now
    assigned_now: dict[str, int]  # new images per split
    overridden: list[str]  # test-list ids kept out of test by the ledger or their group
    near_duplicates: dict


def assign(ids: list[str], paths: list[str], shas: list[str], phashes: list[str], y: np.ndarray,
           fixed_test: np.ndarray, recorded: dict[str, ledger.Entry], *, max_distance: int,
           test_fraction: float, val_fraction: float, seed: int) -> Assignment:
    """Assign the images of one data version, keeping every recorded split.

    Args:
        ids, paths, shas, phashes: per kept image, in canonical (id) order.
        y: multi-hot labels [images, classes].
        fixed_test: the user's test split (test list or source hint).
        recorded: the ledger.
        max_distance: near-duplicate threshold in bits.
        test_fraction, val_fraction, seed: as ``assign_splits``.
    """
    n = len(ids)
    here = set(shas)
    ghosts = [e for h, e in sorted(recorded.items()) if h not in here]
    groups_all = group_ids(list(phashes) + [e.phash for e in ghosts], max_distance)
    prior = np.array([recorded[h].split if h in recorded else "" for h in shas] + [e.split for e in ghosts],
                     dtype=object)
    inherited = inherited_splits(groups_all, prior)
    known = np.where(prior[:n] != "", prior[:n], inherited[:n])
    groups = groups_all[:n]
    split = assign_splits(y, fixed_test, test_fraction=test_fraction, val_fraction=val_fraction,
                          seed=seed, known=known, groups=groups)
    moved = [ids[i] for i in range(n) if prior[i] and split[i] != prior[i]]
    if moved:  # the one promise this module makes; a bug must not pass silently
        raise AssertionError(f"recorded images changed split: {moved[:5]}")
    entries = dict(recorded)
    fresh = [i for i in range(n) if not prior[i]]
    for i in fresh:
        entries[shas[i]] = ledger.Entry(shas[i], split[i], phashes[i], paths[i])
    return Assignment(
        split=split,
        entries=entries,
        assigned_now={s: sum(split[i] == s for i in fresh) for s in SPLITS},
        overridden=[ids[i] for i in range(n) if fixed_test[i] and split[i] != "test"],
        near_duplicates=_group_stats(ids, groups, split, groups_all, n, max_distance),
    )


def _group_stats(ids: list[str], groups: np.ndarray, split: list[str], groups_all: np.ndarray,
                 n: int, max_distance: int) -> dict:
    """Near-duplicate groups among this version's images, for stats.json."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(i)
    multi = sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), ids[m[0]]))
    spanning = [m for m in multi if len({split[i] for i in m}) > 1]
    earlier = set(groups_all[n:].tolist())
    return {
        "max_distance": max_distance,
        "groups": len(multi),
        "images": sum(len(m) for m in multi),
        "largest": len(multi[0]) if multi else 0,
        "examples": [[ids[i] for i in m] for m in multi[:EXAMPLES]],
        # images grouped with one no longer in the data (they took that image's split)
        "with_removed_images": int(sum(g in earlier for g in groups.tolist())),
        # only possible when the ledger already held members in different splits
        "spanning_splits": len(spanning),
        "spanning_examples": [{ids[i]: split[i] for i in m} for m in spanning[:EXAMPLES]],
    }
