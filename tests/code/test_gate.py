"""The quality gate's checks and verdict (tasks/evaluation/gate.py, bootstrap.py), without
models or stores: each check refuses a crafted candidate and the decision names it."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tasks.evaluation import bootstrap
from tasks.evaluation.gate import Rules, compare, decide, render_report

CLASSES = [f"c{k}" for k in range(6)]


def world(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels (every class common) and a good but imperfect production model's scores."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.int64)
    base = np.clip(0.35 * y + rng.normal(0.3, 0.25, y.shape), 0, 1).round(6)
    return y, base


def verdict(y, cand, base, **rules):
    checks, unchecked = compare(y, cand, base, CLASSES, Rules(**rules))
    return decide(checks, "v-prod", rules=Rules(**rules), force=False, unchecked=unchecked)


def test_the_same_model_passes_every_check_and_lists_them_all():
    y, base = world()
    d = verdict(y, base.copy(), base)
    assert d.passed and d.failed == [] and d.baseline_version == "v-prod"
    names = [c["name"] for c in d.checks]
    assert names == ["map", "p_at_1"] + [f"class_ap:{c}" for c in CLASSES]
    assert all(c["candidate"] == c["baseline"] for c in d.checks)


def test_map_drop_beyond_the_allowance_is_refused_by_name():
    y, base = world()
    worse = (base + np.random.default_rng(1).normal(0, 0.3, base.shape)).round(6)
    d = verdict(y, worse, base)
    assert not d.passed and "map" in d.failed and "failing checks: map (" in d.reason
    m = next(c for c in d.checks if c["name"] == "map")
    assert m["baseline"] - m["candidate"] > 0.01 and "drops by" in m["detail"]


def test_p_at_1_drop_is_refused_even_when_every_ap_is_unchanged():
    y, base = world()
    cand = base.copy()
    cand[:, 0] += 10.0  # monotone within class 0: every class's ranking (AP) is unchanged
    d = verdict(y, cand, base)
    assert d.failed == ["p_at_1"], d.failed
    p1 = next(c for c in d.checks if c["name"] == "p_at_1")
    assert p1["candidate"] < p1["baseline"]


def test_a_lost_class_is_refused_although_the_mean_improves():
    y, base = world()
    rng = np.random.default_rng(2)
    cand = (2.0 * y + rng.random(y.shape) * 0.1).round(6)  # perfect on every class...
    cand[:, 3] = rng.random(len(y)).round(6)  # ...except c3, now random
    d = verdict(y, cand, base)
    assert d.failed == ["class_ap:c3"], d.failed
    m = next(c for c in d.checks if c["name"] == "map")
    assert m["candidate"] > m["baseline"]  # the mean alone would have passed it


def test_classes_below_min_support_are_listed_unchecked_not_judged():
    y, base = world()
    y[20:, 5] = 0  # c5: at most 20 positives left
    support = int(y[:, 5].sum())
    base[:, 5] = (0.5 * y[:, 5] + 0.4 * np.random.default_rng(3).random(len(y))).round(6)  # c5: AP 1
    cand = base.copy()
    cand[:, 5] = (1.0 - base[:, 5]).round(6)  # c5 ranked backwards
    d = verdict(y, cand, base, min_support=support + 1, max_map_drop=1.0, max_p1_drop=1.0)
    assert d.passed and d.unchecked_classes == {"c5": support}
    assert "class_ap:c5" not in [c["name"] for c in d.checks]
    assert verdict(y, cand, base, min_support=support, max_map_drop=1.0, max_p1_drop=1.0).failed == ["class_ap:c5"]


def test_must_improve_refuses_an_equal_model():
    y, base = world()
    d = verdict(y, base.copy(), base, must_improve=True)
    assert d.failed == ["map_improves"]


def test_bootstrap_refuses_a_gain_that_rests_on_a_few_images():
    y, base = world(n=200)
    cand = base.copy()
    # fix the worst-ranked positive of one class: a real but tiny, fragile gain
    k = 0
    pos = np.flatnonzero(y[:, k])
    worst = pos[np.argmin(base[pos, k])]
    cand[worst, k] = 1.0
    rules = dict(must_improve=True, bootstrap_samples=400)
    assert verdict(y, cand, base, **rules).passed  # the point estimate does improve
    d = verdict(y, cand, base, bootstrap=True, **rules)
    assert d.failed == ["map_bootstrap"], d.failed
    check = next(c for c in d.checks if c["name"] == "map_bootstrap")
    assert "lower bound +0.0000" in check["detail"] and "95% lower bound" in check["rule"]
    # a broad, real gain holds under the bootstrap
    better = (2.0 * y + np.random.default_rng(4).random(y.shape) * 0.1).round(6)
    assert verdict(y, better, base, bootstrap=True, **rules).passed


def test_bootstrap_is_deterministic_and_pairs_the_images():
    y, base = world(n=150)
    a = bootstrap.paired_map_deltas(y, base, base, 300, seed=7)
    assert np.all(a == 0.0)  # paired: the same model never differs from itself on a resample
    other = (base + np.random.default_rng(5).normal(0, 0.1, base.shape)).round(6)
    d1 = bootstrap.paired_map_deltas(y, other, base, 300, seed=7)
    assert np.array_equal(d1, bootstrap.paired_map_deltas(y, other, base, 300, seed=7))
    assert not np.array_equal(d1, bootstrap.paired_map_deltas(y, other, base, 300, seed=8))


def test_weighted_ap_equals_scikit_learn_with_sample_weights_and_ties():
    rng = np.random.default_rng(6)
    y = (rng.random(80) < 0.4).astype(np.int64)
    s = rng.integers(0, 10, 80) / 10  # many ties
    weights = rng.multinomial(80, np.full(80, 1 / 80), size=5).astype(float)
    got = bootstrap.weighted_ap(y, s, weights)
    for row, w in zip(got, weights):
        assert row == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)


def test_force_publishes_a_refusal_and_says_so():
    y, base = world()
    rules = Rules()
    checks, _ = compare(y, (base * 0).round(6), base, CLASSES, rules)
    d = decide(checks, "v-1", rules=rules, force=True)
    assert (d.passed, d.publish, d.forced) == (False, True, True) and d.reason.startswith("FORCED")
    ok, _ = compare(y, base.copy(), base, CLASSES, rules)
    assert not decide(ok, "v-1", rules=rules, force=True).forced  # nothing to override


def test_no_baseline_passes_and_says_why():
    d = decide(None, None, rules=Rules(), force=False)
    assert d.passed and d.checks == [] and "no baseline" in d.reason


def test_report_lists_every_check_with_both_numbers_and_names_the_failures():
    y, base = world()
    cand = base.copy()
    cand[:, 0] += 10.0
    d = verdict(y, cand, base)
    md = render_report(d, "rejected", "v-cand", "production", {"map": 0.5}, {"map": 0.5})
    assert "REJECTED" in md and "not an error" in md and "`v-prod`" in md
    assert "failing checks: `p_at_1`" in md
    p1 = next(c for c in d.checks if c["name"] == "p_at_1")
    assert f"| p_at_1 | {p1['candidate']} | {p1['baseline']} |" in md and "**FAIL**" in md
    assert md.count("| class_ap:") == len(CLASSES)
