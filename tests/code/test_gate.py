"""The quality gate's rule (tasks/evaluation/gate.py), without models or stores."""

from tasks.evaluation.gate import decide, render_report

KW = {"max_map_drop": 0.01, "must_improve": False, "force": False}


def test_no_baseline_passes():
    d = decide(0.3, None, None, **KW)
    assert d.passed and d.publish and not d.forced and "no baseline" in d.reason


def test_drop_within_allowance_passes_and_beyond_is_rejected():
    assert decide(0.795, 0.80, "v-1", **KW).passed
    assert decide(0.79, 0.80, "v-1", **KW).passed  # exactly the allowance
    d = decide(0.78, 0.80, "v-1", **KW)
    assert not d.passed and not d.publish and "drops by 0.0200" in d.reason


def test_must_improve_requires_strictly_better():
    kw = dict(KW, must_improve=True)
    assert not decide(0.80, 0.80, "v-1", **kw).passed
    assert decide(0.81, 0.80, "v-1", **kw).passed


def test_force_publishes_a_rejection_and_says_so():
    d = decide(0.5, 0.8, "v-1", **dict(KW, force=True))
    assert (d.passed, d.publish, d.forced) == (False, True, True)
    assert d.reason.startswith("FORCED")
    assert not decide(0.8, 0.8, "v-1", **dict(KW, force=True)).forced  # nothing to override


def test_report_shows_both_models_numbers():
    d = decide(0.5, 0.8, "v-1", **KW)
    md = render_report(d, "rejected", "v-2", "production", {"map": 0.5}, {"map": 0.8})
    assert "REJECTED" in md and "not an error" in md and "| map | 0.5 | 0.8 |" in md
