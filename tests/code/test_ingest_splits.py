"""Iterative stratification: deterministic, honours a fixed test split, covers rare labels."""

from __future__ import annotations

import numpy as np

from tasks.splits.stratify import assign_splits, split_stats


def _labels(n: int = 200, k: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < np.linspace(0.5, 0.05, k)).astype(int)
    y[:, -1] = 0
    y[[3, 50, 120], -1] = 1  # a label with exactly 3 examples
    return y


def test_same_input_and_seed_give_the_same_splits():
    y = _labels()
    none = np.zeros(len(y), bool)
    a = assign_splits(y, none, test_fraction=0.2, val_fraction=0.15, seed=7)
    assert a == assign_splits(y, none, test_fraction=0.2, val_fraction=0.15, seed=7)
    assert a != assign_splits(y, none, test_fraction=0.2, val_fraction=0.15, seed=8)


def test_fractions_are_roughly_respected():
    y = _labels(1000)
    s = np.array(assign_splits(y, np.zeros(1000, bool), test_fraction=0.2, val_fraction=0.25, seed=0))
    assert abs((s == "test").mean() - 0.2) < 0.03 and abs((s == "val").mean() - 0.2) < 0.03


def test_a_label_with_three_examples_lands_in_every_split():
    y = _labels()
    s = np.array(assign_splits(y, np.zeros(len(y), bool), test_fraction=0.2, val_fraction=0.15, seed=0))
    assert sorted(s[y[:, -1] == 1]) == ["test", "train", "val"]


def test_a_fixed_test_split_is_kept_and_nothing_else_goes_to_test():
    y = _labels()
    fixed = np.arange(len(y)) % 4 == 0
    s = np.array(assign_splits(y, fixed, test_fraction=0.2, val_fraction=0.2, seed=0))
    assert (s[fixed] == "test").all() and not (s[~fixed] == "test").any()
    assert set(s[~fixed]) == {"train", "val"}


def test_zero_fractions_put_everything_in_train():
    y = _labels(200)[:30]
    assert set(assign_splits(y, np.zeros(30, bool), test_fraction=0.0, val_fraction=0.0, seed=0)) == {"train"}


def test_rows_without_labels_are_split_too():
    y = np.zeros((20, 3), int)
    y[:10, 0] = 1
    s = assign_splits(y, np.zeros(20, bool), test_fraction=0.25, val_fraction=0.2, seed=0)
    assert len(s) == 20 and "test" in s[10:]


def test_stats_count_per_split_and_class():
    y = np.array([[1, 0], [1, 1], [0, 1]])
    st = split_stats(y, ["train", "train", "test"], ["a", "b"])
    assert st["counts"] == {"train": 2, "val": 0, "test": 1}
    assert st["per_class"]["train"] == {"a": 2, "b": 1} and st["missing"]["test"] == ["a"]
    assert st["cardinality"]["train"] == 1.5 and st["cardinality"]["all"] == round(4 / 3, 4)
