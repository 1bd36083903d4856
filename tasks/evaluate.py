"""Evaluate stage: score the full model on val and test, tune thresholds, write the report.

    python -m tasks.evaluate

Reads artifacts/models/full (tasks.model.build.load_model) and artifacts/shards; writes
artifacts/eval/: metrics.json (flat, rounded: DVC metrics), per_class.csv, thresholds.json,
predictions.csv (test ids + one score column per class), pr_curves.csv (long format for
DVC plots), pr_curves.png, ap_per_class.png, label_count.png and model_card.md.
Thresholds are tuned on the validation split only, so test numbers stay honest.
No timestamps or absolute paths: same inputs and params give the same bytes.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.common import paths
from tasks.common.config import EvaluateConfig, load
from tasks.common.errors import DataError, stage_main
from tasks.common.files import write_json
from tasks.dataset import shards
from tasks.evaluation import metrics, model_card, plots, scoring

MODEL_DIR = paths.FULL_MODEL
SHARD_DIR = paths.SHARDS
OUT_DIR = paths.EVAL
DIGITS = scoring.DIGITS


@dataclass
class EvalSummary:
    """What the evaluate stage produced."""

    out_dir: Path
    metrics: dict[str, float]
    excluded_classes: list[str] = field(default_factory=list)
    defaulted_thresholds: list[str] = field(default_factory=list)




def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def write_thresholds(path: Path, classes: list[str], thr: np.ndarray, tuned: list[bool], default: float) -> None:
    """thresholds.json: {"classes", "thresholds", "tuned", "default_threshold", "rule"}."""
    write_json(path, {
        "classes": classes,
        "thresholds": [round(float(t), DIGITS) for t in thr],
        "tuned": tuned,
        "default_threshold": default,
        "rule": "score >= threshold",
    })


def run(
    cfg: EvaluateConfig,
    model_dir: Path = MODEL_DIR,
    shard_dir: Path = SHARD_DIR,
    out_dir: Path = OUT_DIR,
) -> EvalSummary:
    """Evaluate the model in ``model_dir`` on the shards and write the report to ``out_dir``.

    Args:
        cfg: the evaluate section (batch_size, default_threshold).
        model_dir: a train output folder (model.keras + metadata.json).
        shard_dir: the augment stage's output.
        out_dir: where every report file goes (created; files overwritten).
    Returns:
        EvalSummary with the headline metrics.
    """
    from tasks.model.build import load_model  # TensorFlow import only when a model is needed

    model, meta = load_model(Path(model_dir))
    classes: list[str] = list(meta["classes"])
    index = shards.read_index(Path(shard_dir))
    if list(index["classes"]) != classes:
        raise DataError(f"{model_dir}: model classes differ from {shard_dir}/index.json classes")
    # Tuned and measured on the scores as written to predictions.csv (rounded).
    _, y_val, s_val = scoring.rounded_scores(model, shard_dir, "val", cfg.batch_size)
    ids, y_test, s_test = scoring.rounded_scores(model, shard_dir, "test", cfg.batch_size)
    if len(ids) == 0:
        raise DataError(f"{shard_dir}: the test split is empty; nothing to evaluate")

    thr, tuned = metrics.tune_thresholds(y_val, s_val, cfg.default_threshold)
    summary = metrics.summary_metrics(y_test, s_test, thr)
    summary["n_val"] = len(y_val)
    rows = metrics.per_class_rows(classes, y_test, s_test, thr, tuned)
    _, excluded_idx = metrics.mean_ap(y_test, s_test)
    excluded = [classes[k] for k in excluded_idx]
    defaulted = [c for c, t in zip(classes, tuned) if not t]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = scoring.round_metrics(summary)
    write_json(out_dir / "metrics.json", flat)
    write_thresholds(out_dir / "thresholds.json", classes, thr, tuned, cfg.default_threshold)
    cols = ["class", "support", "predicted", "ap", "threshold", "threshold_tuned", "precision", "recall", "f1"]
    _write_csv(out_dir / "per_class.csv", cols, [
        [r[c] if not isinstance(r[c], float) else ("" if math.isnan(r[c]) else round(r[c], DIGITS)) for c in cols]
        for r in rows
    ])
    _write_csv(out_dir / "predictions.csv", ["id", *classes],
               [[i, *(f"{v:.{DIGITS}f}" for v in s)] for i, s in zip(ids, s_test)])
    points = metrics.pr_curve_points(classes, y_test, s_test)
    _write_csv(out_dir / "pr_curves.csv", ["class", "recall", "precision"],
               [[c, round(r, 4), round(p, 4)] for c, r, p in points])

    ap = np.array([r["ap"] for r in rows])
    plots.plot_pr_curves(points, {r["class"]: r["ap"] for r in rows}, out_dir / "pr_curves.png")
    plots.plot_ap_bars(classes, ap, summary["map"], out_dir / "ap_per_class.png")
    plots.plot_label_counts(classes, y_test, metrics.binarize(s_test, thr), out_dir / "label_count.png")

    data = {
        "shards_index_sha256": scoring.index_sha256(shard_dir),
        "counts": {s: int(v.get("count", 0)) for s, v in sorted(index.get("splits", {}).items())},
    }
    card = model_card.render(meta, data, flat, rows, excluded)
    (out_dir / "model_card.md").write_text(card)
    return EvalSummary(out_dir, flat, excluded, defaulted)


def main() -> None:
    """Entry point of ``python -m tasks.evaluate``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s = stage_main("evaluate", lambda: run(load(EvaluateConfig)))
    m = s.metrics
    print(f"evaluate: test n={m['n_images']} mAP={m['map']:.4f} P@1={m['p_at_1']:.4f} "
          f"micro-F1={m['micro_f1']:.4f} macro-F1={m['macro_f1']:.4f} -> {s.out_dir}")
    if s.excluded_classes:
        print(f"evaluate: no test positive (left out of mAP): {', '.join(s.excluded_classes)}")
    if s.defaulted_thresholds:
        print(f"evaluate: no validation positive (default threshold): {', '.join(s.defaulted_thresholds)}")


if __name__ == "__main__":
    main()
