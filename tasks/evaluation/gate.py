"""The publish stage's quality gate: the decision rule and its gate.md report (pure functions).

The candidate's test mAP (from the evaluate stage) is compared with the mAP of the current
production model recomputed on the SAME test shards. The gate passes when the drop is at most
``max_map_drop`` (and, with ``must_improve``, the candidate is strictly better); with no
production model it passes as "no baseline". ``force`` publishes a rejected candidate and the
record says so. A rejection is a decision, not an error: the stage still exits 0.

Library only; ``python -m tasks.publish`` runs the stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EPS = 1e-9  # metrics are rounded to 6 digits; equal-after-rounding must not fail the gate


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate."""

    passed: bool  # the rule's verdict, ignoring force
    publish: bool  # passed, or forced
    forced: bool  # published only because of force
    reason: str
    candidate_map: float
    baseline_map: float | None
    baseline_version: str | None
    max_map_drop: float
    must_improve: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    candidate_map: float,
    baseline_map: float | None,
    baseline_version: str | None,
    *,
    max_map_drop: float,
    must_improve: bool,
    force: bool,
    note: str = "",
) -> GateDecision:
    """Apply the gate rule.

    Args:
        candidate_map: the new model's test mAP.
        baseline_map: production's mAP on the same test shards; None = no comparable baseline.
        baseline_version: production's registry version (None when there is none).
        max_map_drop: largest allowed drop (baseline - candidate).
        must_improve: also require candidate > baseline.
        force: publish even when the rule says no.
        note: why there is no comparable baseline, if there is a production model anyway.
    Returns:
        The decision.
    """
    if baseline_map is None:
        passed, reason = True, note or "no baseline: no production model yet"
    else:
        drop = baseline_map - candidate_map
        if drop > max_map_drop + EPS:
            passed, reason = False, (f"mAP drops by {drop:.4f} ({baseline_map:.4f} -> {candidate_map:.4f}), "
                                     f"more than max_map_drop {max_map_drop}")
        elif must_improve and candidate_map <= baseline_map + EPS:
            passed, reason = False, (f"must_improve: mAP {candidate_map:.4f} is not above "
                                     f"production's {baseline_map:.4f}")
        else:
            passed, reason = True, (f"mAP {baseline_map:.4f} -> {candidate_map:.4f} "
                                    f"(change {-drop:+.4f}, allowed drop {max_map_drop})")
    forced = force and not passed
    if forced:
        reason = f"FORCED (publish.force=true) despite: {reason}"
    return GateDecision(passed, passed or force, forced, reason, candidate_map, baseline_map,
                        baseline_version, max_map_drop, must_improve)


def render_report(decision: GateDecision, outcome: str, version: str, alias: str,
                  candidate: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """gate.md: the decision, the rule and both models' numbers side by side.

    Args:
        decision: the gate's decision.
        outcome: "published", "forced", "rejected" or "unchanged".
        version: the candidate's content version.
        alias: the alias the stage moves.
        candidate: the candidate's test metrics.
        baseline: production's metrics on the same test data (None: no baseline).
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
        f"- rule: mAP may drop by at most {decision.max_map_drop} against `{alias}`"
        + ("; must improve" if decision.must_improve else ""),
        f"- candidate version: `{version}`",
        f"- baseline (`{alias}`): `{decision.baseline_version or 'none'}`", "",
        "| metric | candidate | baseline |", "|---|---|---|",
    ]
    keys = sorted(set(candidate) | set(baseline or {}))
    for k in keys:
        b = "" if baseline is None else baseline.get(k, "")
        lines.append(f"| {k} | {candidate.get(k, '')} | {b} |")
    return "\n".join(lines) + "\n"
