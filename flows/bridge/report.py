"""What a retraining run shows its user: Prefect artifacts and the summary the CLI prints.

Reads only the files the stages wrote (metrics.json, receipt.json, history.csv), so it needs
no TensorFlow and works the same whether the stages ran or came from the cache.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tasks.common import paths

ARTIFACTS = {
    "metrics": paths.EVAL / "metrics.json",
    "per_class": paths.EVAL / "per_class.csv",
    "model_card": paths.EVAL / "model_card.md",
    "receipt": paths.PUBLISH / "receipt.json",
    "gate": paths.PUBLISH / "gate.md",
    "model": paths.FULL_MODEL,
    "eval": paths.EVAL,
}
HEADLINE = ["p_at_1", "map", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def metrics_table(metrics: dict[str, Any]) -> str:
    """Markdown table of the headline metrics first, then any others."""
    keys = [k for k in HEADLINE if k in metrics] + sorted(k for k in metrics if k not in HEADLINE)
    rows = [f"| {k} | {metrics[k]:.4f} |" if isinstance(metrics[k], float) else f"| {k} | {metrics[k]} |" for k in keys]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def history_rows(root: Path, phase: str) -> list[dict[str, str]]:
    path = root / paths.model_dir(phase) / "history.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return [{"phase": phase, **row} for row in csv.DictReader(fh)]


def summarize(root: Path, results: list[dict[str, Any]], changed: dict[str, Any]) -> dict[str, Any]:
    """The run's outcome as plain data: stages, metrics, gate decision, paths."""
    return {
        "stages": {r["stage"]: r["outcome"] for r in results},
        "overrides": changed,
        "metrics": _json(root / ARTIFACTS["metrics"]),
        "publish": _json(root / ARTIFACTS["receipt"]),
        "paths": {k: str(root / v) for k, v in ARTIFACTS.items() if (root / v).exists()},
    }


def publish_run_report(root: Path, results: list[dict[str, Any]], changed: dict[str, Any]) -> dict[str, Any]:
    """Attach the run's report to the Prefect run as artifacts and return the summary."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    summary = summarize(root, results, changed)
    create_table_artifact(
        [{"stage": r["stage"], "outcome": r["outcome"], "fingerprint": r["fingerprint"][:16]} for r in results],
        key="stages", description="What each dvc.yaml stage did in this run (ran / restored / unchanged)",
    )
    if summary["metrics"]:
        create_markdown_artifact(
            "## Test metrics\n\n" + metrics_table(summary["metrics"])
            + ("\n\n## Parameters changed for this run\n\n" + "\n".join(f"- `{k}`: {a!r} -> {b!r}" for k, (a, b) in changed.items()) if changed else ""),
            key="metrics", description="Evaluation of the fine-tuned model on the test split",
        )
    curves = history_rows(root, "frozen") + history_rows(root, "full")
    if curves:
        create_table_artifact(curves, key="training-curves", description="Per-epoch loss, mAP and P@1 (train and val)")
    receipt = summary["publish"]
    if receipt:
        gate_md = root / ARTIFACTS["gate"]
        create_markdown_artifact(
            (gate_md.read_text() + "\n" if gate_md.exists() else "")
            + "## Receipt\n\n```json\n" + json.dumps(receipt, indent=2, sort_keys=True) + "\n```",
            key="publish", description=gate_summary(receipt) or "Quality gate decision and registry version",
        )
    card = root / ARTIFACTS["model_card"]
    if card.exists():
        create_markdown_artifact(card.read_text(), key="model-card", description="Model card")
    return summary


def gate_summary(receipt: dict[str, Any]) -> str:
    """One line: the gate's verdict, the production version compared with, the failing checks."""
    gate = receipt.get("gate") or {}
    if not gate:
        return ""
    line = f"gate {receipt.get('outcome')}: {receipt.get('version')} vs {gate.get('baseline_version') or 'no production'}"
    if gate.get("failed"):
        line += "; failing checks: " + ", ".join(gate["failed"])
    return line


def render_text(summary: dict[str, Any]) -> str:
    """The end-of-run text the CLI prints: stages, metrics table, decision, paths."""
    lines = ["", "Stages:"] + [f"  {s:13s} {o}" for s, o in summary["stages"].items()]
    if summary["metrics"]:
        lines += ["", "Test metrics:", metrics_table(summary["metrics"])]
    receipt = summary["publish"]
    if receipt:
        lines += ["", "Publish: " + ", ".join(f"{k}={receipt[k]}" for k in ("outcome", "version", "uri") if k in receipt)]
        if gate_summary(receipt):
            lines.append("  " + gate_summary(receipt))
    lines += ["", "Outputs:"] + [f"  {k:10s} {v}" for k, v in summary["paths"].items()]
    return "\n".join(lines)
