"""The publish stage's quality gate: the checks, the decision and its gate.md report (pure functions).

The candidate and the current production model are scored on the SAME test images and
compared metric by metric; every check records both numbers, its rule and its verdict:

- ``map``: mAP may drop by at most ``max_map_drop`` (with ``must_improve``: must rise);
- ``p_at_1``: P@1 may drop by at most ``max_p1_drop``;
- ``class_ap:<class>``: for every class with at least ``min_support`` positive test images,
  its AP may drop by at most ``max_class_drop`` (so a model that loses a whole class fails
  even when the mean holds); rarer classes are listed as unchecked, with their support;
- ``map_bootstrap`` (``bootstrap: true``): the mAP rule must hold at ``confidence`` under a
  paired bootstrap over the test images: the one-sided lower bound of the mAP change must
  be at least ``-max_map_drop`` (above 0 with ``must_improve``).

The gate passes when every check passes; with no comparable production model it passes as
"no baseline". ``force`` publishes a refused candidate and the record says so. A refusal is a
decision, not an error: the stage still exits 0.

Library only; ``python -m tasks.publish`` runs the stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tasks.evaluation import bootstrap, metrics

EPS = 1e-9  # scores and metrics are rounded to 6 digits; equal-after-rounding must not fail


@dataclass(frozen=True)
class Rules:
    """The gate's thresholds (params.yaml's publish section)."""

    max_map_drop: float = 0.01
    must_improve: bool = False
    max_p1_drop: float = 0.01
    min_support: int = 20
    max_class_drop: float = 0.05
    bootstrap: bool = False
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0


@dataclass(frozen=True)
class Check:
    """One comparison: both numbers, the rule, the verdict."""

    name: str
    candidate: float | None
    baseline: float | None
    rule: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate."""

    passed: bool  # every check passed (ignoring force)
    publish: bool  # passed, or forced
    forced: bool  # published only because of force
    reason: str
    baseline_version: str | None  # the production version compared with
    checks: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # names of the failing checks
    unchecked_classes: dict[str, int] = field(default_factory=dict)  # class -> test support < min_support
    rules: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(v: float) -> float | None:
    return None if v is None or np.isnan(v) else round(float(v), 6)


def _drop_check(name: str, cand: float, base: float, allowed: float, what: str) -> Check:
    drop = base - cand
    ok = bool(drop <= allowed + EPS)
    return Check(name, _r(cand), _r(base), f"{what} may drop by at most {allowed}", ok,
                 f"change {-drop:+.4f}" + ("" if ok else f": drops by {drop:.4f}, more than {allowed}"))


def compare(y: np.ndarray, s_candidate: np.ndarray, s_baseline: np.ndarray, classes: list[str],
            rules: Rules) -> tuple[list[Check], dict[str, int]]:
    """Every check of the gate on one test set scored by both models.

    Args:
        y: multi-hot test labels [n, c].
        s_candidate, s_baseline: the two models' scores on the same images, same order [n, c].
        classes: class names [c].
        rules: thresholds.
    Returns:
        (checks in report order, {class: support} of classes too rare to check).
    """
    y = (np.asarray(y) > 0.5).astype(np.int64)
    if y.shape != s_candidate.shape or y.shape != s_baseline.shape or y.shape[1] != len(classes):
        raise ValueError(f"labels {y.shape}, candidate {s_candidate.shape} and baseline "
                         f"{s_baseline.shape} scores must cover the same images and {len(classes)} classes")
    cand_map, base_map = metrics.mean_ap(y, s_candidate)[0], metrics.mean_ap(y, s_baseline)[0]
    checks = [_drop_check("map", cand_map, base_map, rules.max_map_drop, "mAP")]
    if rules.must_improve:
        ok = bool(cand_map > base_map + EPS)
        checks.append(Check("map_improves", _r(cand_map), _r(base_map), "must_improve: mAP must rise", ok,
                            "" if ok else f"mAP {cand_map:.4f} is not above production's {base_map:.4f}"))
    checks.append(_drop_check("p_at_1", metrics.p_at_1(y, s_candidate), metrics.p_at_1(y, s_baseline),
                              rules.max_p1_drop, "P@1"))
    support = y.sum(axis=0)
    ap_c, ap_b = metrics.ap_per_class(y, s_candidate), metrics.ap_per_class(y, s_baseline)
    unchecked = {}
    for k, name in enumerate(classes):
        if support[k] < rules.min_support:
            unchecked[name] = int(support[k])
            continue
        c = _drop_check(f"class_ap:{name}", ap_c[k], ap_b[k], rules.max_class_drop, f"AP of '{name}'")
        checks.append(Check(c.name, c.candidate, c.baseline, c.rule + f" (support {int(support[k])})",
                            c.passed, c.detail))
    if rules.bootstrap:
        checks.append(bootstrap_check(y, s_candidate, s_baseline, rules))
    return checks, unchecked


def bootstrap_check(y: np.ndarray, s_candidate: np.ndarray, s_baseline: np.ndarray, rules: Rules) -> Check:
    """The mAP rule at ``rules.confidence`` under a paired bootstrap over the test images."""
    deltas = bootstrap.paired_map_deltas(y, s_candidate, s_baseline, rules.bootstrap_samples, rules.bootstrap_seed)
    low = bootstrap.lower_bound(deltas, rules.confidence)
    need = 0.0 if rules.must_improve else -rules.max_map_drop
    ok = bool(low > need + EPS if rules.must_improve else low >= need - EPS)
    cand_map, base_map = metrics.mean_ap(y, s_candidate)[0], metrics.mean_ap(y, s_baseline)[0]
    rule = (f"{rules.confidence:.0%} lower bound of the mAP change "
            + ("> 0" if rules.must_improve else f">= -{rules.max_map_drop}")
            + f" ({rules.bootstrap_samples} paired resamples, seed {rules.bootstrap_seed})")
    return Check("map_bootstrap", _r(cand_map), _r(base_map), rule, ok,
                 f"lower bound {low:+.4f}, median {float(np.median(deltas)):+.4f}")


def decide(checks: list[Check] | None, baseline_version: str | None, *, rules: Rules, force: bool,
           note: str = "", unchecked: dict[str, int] | None = None) -> GateDecision:
    """The verdict over all checks.

    Args:
        checks: from :func:`compare`; None when there is no comparable baseline.
        baseline_version: the production version compared with (None: none).
        rules: the thresholds (recorded in the decision).
        force: publish even when a check fails.
        note: why there is no comparable baseline, when there is a production model anyway.
        unchecked: classes too rare to check, with their support.
    Returns:
        The decision.
    """
    if checks is None:
        passed, failed, reason = True, [], note or "no baseline: no production model yet"
        checks = []
    else:
        failed = [c.name for c in checks if not c.passed]
        passed = not failed
        head = next(c for c in checks if c.name == "map")
        summary = f"mAP {head.baseline:.4f} -> {head.candidate:.4f} against {baseline_version}"
        reason = (f"{summary}; all {len(checks)} checks pass" if passed else
                  f"{summary}; failing checks: " + "; ".join(f"{c.name} ({c.detail})" for c in checks if not c.passed))
    forced = force and not passed
    if forced:
        reason = f"FORCED (publish.force=true) despite: {reason}"
    return GateDecision(passed, passed or force, forced, reason, baseline_version,
                        [asdict(c) for c in checks], failed, dict(unchecked or {}), asdict(rules))


def render_report(decision: GateDecision, outcome: str, version: str, alias: str,
                  candidate: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """gate.md: the verdict, every check with both numbers, then both models' summary metrics.

    Args:
        decision: the gate's decision.
        outcome: "published", "forced", "rejected" or "unchanged".
        version: the candidate's content version.
        alias: the alias the stage moves.
        candidate: the candidate's test metrics.
        baseline: production's metrics on the same test images (None: no baseline).
    Returns:
        Markdown text.
    """
    verdict = {"published": "PASSED - published", "forced": "FAILED - published anyway (forced)",
               "rejected": "REJECTED - not published (this is not an error)",
               "unchanged": "PASSED - already published, nothing to do"}[outcome]
    lines = [
        "# Quality gate", "",
        f"**{verdict}**", "",
        f"- reason: {decision.reason}",
        f"- candidate version: `{version}`",
        f"- compared with (`{alias}`): `{decision.baseline_version or 'none'}`",
    ]
    if decision.failed:
        lines.append("- failing checks: " + ", ".join(f"`{n}`" for n in decision.failed))
    if decision.checks:
        lines += ["", "| check | candidate | production | rule | verdict | detail |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['name']} | {c['candidate']} | {c['baseline']} | {c['rule']} | "
                  f"{'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in decision.checks]
    if decision.unchecked_classes:
        lines += ["", "Not checked (fewer than min_support test images): "
                  + ", ".join(f"{k} ({v})" for k, v in decision.unchecked_classes.items())]
    lines += ["", "| metric | candidate | production |", "|---|---|---|"]
    for k in sorted(set(candidate) | set(baseline or {})):
        b = "" if baseline is None else baseline.get(k, "")
        lines.append(f"| {k} | {candidate.get(k, '')} | {b} |")
    return "\n".join(lines) + "\n"
