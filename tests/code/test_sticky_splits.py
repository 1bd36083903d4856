"""Splits that never move: known splits kept, deficits steer new images, near-duplicate groups
share a split, the ledger file is validated."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.splits import ledger
from tasks.splits.neardup import close_pairs, group_ids
from tasks.splits.stratify import assign_splits, inherited_splits
from tasks.splits.sticky import assign

SHARES = {"train": 0.8 * 0.85, "val": 0.8 * 0.15, "test": 0.2}
TOLERANCE = 0.03  # per-label split share vs target, labels with >= 200 examples


def _labels(n: int, prior: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, len(prior))) < prior).astype(int)


def _hashes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{int(x):016x}" for x in rng.integers(0, 2**63, n, dtype=np.uint64)]


def _flip(h: str, bits: list[int]) -> str:
    return f"{int(h, 16) ^ sum(1 << int(b) for b in bits):016x}"


@pytest.mark.parametrize("t", [0, 3, 6])
def test_close_pairs_equal_brute_force(t):
    hs = _hashes(1500, seed=t)
    rng = np.random.default_rng(1)
    for i in range(40):  # plant near pairs at every distance up to t + 2
        hs.append(_flip(hs[i], list(rng.choice(64, size=i % (t + 3), replace=False))))
    h = np.array([int(x, 16) for x in hs], dtype=np.uint64)
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    brute = {(i, j) for i, j in zip(*np.nonzero(d <= t)) if i < j}
    assert {tuple(p) for p in close_pairs(hs, t).tolist()} == brute
    assert len(brute) >= 10


def test_groups_link_chains_and_name_the_first_member():
    a = "0" * 16
    b = _flip(a, [0, 1, 2])  # 3 from a
    c = _flip(b, [10, 11, 12])  # 3 from b, 6 from a: joined through b
    far = "f" * 16
    assert group_ids([far, a, b, c], 3).tolist() == [0, 1, 1, 1]
    assert group_ids([a, c], 3).tolist() == [0, 1]


def test_known_splits_never_change_and_new_images_fill_the_deficits():
    prior = np.linspace(0.5, 0.08, 10)
    y_old = _labels(3000, prior, 0)
    old = np.array(assign_splits(y_old, np.zeros(3000, bool), test_fraction=0.2, val_fraction=0.15, seed=0), dtype=object)
    # skew the old split on purpose: half of label 0's test images went to train
    skewed = old.copy()
    skewed[np.flatnonzero((old == "test") & (y_old[:, 0] == 1))[::2]] = "train"
    y_new = _labels(3000, prior[::-1], 1)  # the new slice has the reverse class balance
    y = np.vstack([y_old, y_new])
    known = np.concatenate([skewed, np.array([""] * 3000, dtype=object)])
    got = np.array(assign_splits(y, np.zeros(6000, bool), test_fraction=0.2, val_fraction=0.15, seed=0, known=known))
    assert (got[:3000] == skewed).all()
    for j in range(y.shape[1]):
        col = y[:, j] == 1
        for s, target in SHARES.items():
            assert abs((got[col] == s).mean() - target) < TOLERANCE, (j, s)


def test_new_group_members_join_the_split_their_group_already_holds():
    groups = np.array([0, 0, 2, 2, 2, 5])
    known = np.array(["test", "", "val", "train", "", ""], dtype=object)
    assert inherited_splits(groups, known).tolist() == ["test", "test", "train", "train", "train", ""]


def test_a_group_of_new_images_lands_in_one_split():
    y = _labels(400, np.linspace(0.5, 0.1, 5), 3)
    groups = np.arange(400) // 4 * 4  # groups of four
    s = np.array(assign_splits(y, np.zeros(400, bool), test_fraction=0.2, val_fraction=0.15, seed=0, groups=groups))
    assert all(len(set(s[groups == g])) == 1 for g in np.unique(groups))
    assert set(s) == {"train", "val", "test"}


def _sha(i: int) -> str:
    return f"{i:064x}"


def test_ledger_and_near_duplicates_beat_the_test_list():
    """A recorded train image stays in train though the test list names it; a near-duplicate of
    a removed training image joins train; an earlier test image stays in test."""
    ph = _hashes(6, seed=9)
    recorded = {
        _sha(1): ledger.Entry(_sha(1), "train", ph[0], "images/a.jpg"),
        _sha(2): ledger.Entry(_sha(2), "test", ph[1], "images/b.jpg"),
        _sha(9): ledger.Entry(_sha(9), "train", ph[2], "images/gone.jpg"),  # no longer in the data
    }
    ids = ["a", "b", "copy_of_gone", "new1", "new2"]
    shas = [_sha(1), _sha(2), _sha(3), _sha(4), _sha(5)]
    phashes = [ph[0], ph[1], _flip(ph[2], [5, 40]), ph[3], ph[4]]
    y = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 1]])
    fixed = np.array([True, False, True, True, False])  # the user names a, copy_of_gone, new1
    got = assign(ids, [f"images/{i}.jpg" for i in ids], shas, phashes, y, fixed, recorded, max_distance=4,
                 test_fraction=0.2, val_fraction=0.15, seed=0)
    assert got.split[:4] == ["train", "test", "train", "test"]
    assert got.overridden == ["a", "copy_of_gone"]
    assert set(got.entries) == set(recorded) | set(shas)  # the removed image keeps its row
    assert got.near_duplicates["with_removed_images"] == 1 and got.assigned_now["train"] >= 1


def test_production_ledger_merges_in_and_its_train_and_val_win_a_conflict():
    e = lambda n, split, path="images/x.jpg": ledger.Entry(_sha(n), split, f"{n:016x}", path)  # noqa: E731
    git = {_sha(1): e(1, "test", "images/git.jpg"), _sha(2): e(2, "train"), _sha(3): e(3, "val")}
    prod = {_sha(1): e(1, "train", "images/prod.jpg"), _sha(2): e(2, "test"), _sha(3): e(3, "val"), _sha(4): e(4, "val")}
    merged, conflicts = ledger.merge(git, prod)
    assert conflicts == sorted([_sha(1), _sha(2)])
    # production trained on 1: train, under the git ledger's path; production's test never
    # pulls a git train image out of train; 4 only production knows
    assert {h: m.split for h, m in merged.items()} == {_sha(1): "train", _sha(2): "train", _sha(3): "val", _sha(4): "val"}
    assert merged[_sha(1)].path == "images/git.jpg"
    assert ledger.merge({}, prod) == (prod, []) and ledger.merge(git, {}) == (git, [])


def test_ledger_round_trips_and_rejects_bad_files(tmp_path):
    e = ledger.Entry(_sha(7), "val", "00ff00ff00ff00ff", "images/x y.jpg")
    path = tmp_path / "splits.tsv"
    ledger.write(path, {e.sha256: e})
    assert ledger.read(path) == {e.sha256: e}
    row = "\t".join([e.sha256, "val", e.phash, e.path])
    for text, where in [("sha256\tsplit\n", ":1:"), ("\t".join(ledger.HEADER) + f"\n{row}\n{row}\n", ":3:"),
                        ("\t".join(ledger.HEADER) + f"\n{row.replace('val', 'holdout')}\n", ":2:")]:
        path.write_text(text)
        with pytest.raises(ledger.LedgerError, match=where):
            ledger.read(path)
    with pytest.raises(ledger.LedgerError, match="tagsmith splits init"):
        ledger.read(tmp_path / "missing.tsv")
    assert ledger.moved({e.sha256: e}, {}) == [e.sha256]


def test_the_ledger_params_yaml_names_is_a_dep_of_ingest_and_committed():
    import subprocess
    from pathlib import Path

    import yaml

    from tasks.common.config import IngestConfig, load

    project = Path(__file__).resolve().parents[2]
    path = load(IngestConfig, project / "params.yaml").splits_ledger
    assert path in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["ingest"]["deps"]
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=project, capture_output=True)
    assert tracked.returncode == 0, f"{path} is not tracked by git"
    assert len(ledger.read(project / path)) > 0
