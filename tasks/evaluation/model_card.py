"""The model card (model_card.md) the evaluate stage writes and the registry publishes.

Deterministic Markdown: no timestamps, no absolute paths, numbers rounded.

Library only; no command line.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def render(
    metadata: dict[str, Any],
    data: dict[str, Any],
    metrics: dict[str, Any],
    rows: list[dict[str, Any]],
    excluded: list[str],
    weakest: int = 5,
) -> str:
    """Render the card.

    Args:
        metadata: the model's metadata.json (classes, image_size, backbone, params, ...).
        data: {"shards_index_sha256": str, "counts": {split: n}} of the evaluated shards.
        metrics: the flat test metrics (metrics.json).
        rows: per-class rows (metrics.per_class_rows).
        excluded: classes without a test positive (left out of mAP).
        weakest: how many of the lowest-AP classes to list.
    Returns:
        Markdown text ending with a newline.
    """
    name = metadata.get("backbone", "model")
    lines = [
        f"# Model card: tagsmith multi-label classifier ({name})",
        "",
        "## Model",
        "",
        f"- classes: {len(metadata.get('classes', []))}",
        f"- input: {metadata.get('image_size', '?')} x {metadata.get('image_size', '?')} "
        f"{metadata.get('input', 'RGB 0..255')}",
    ]
    for key in ("backbone", "weights", "phase", "preprocessing"):
        if key in metadata:
            lines.append(f"- {key}: {metadata[key]}")
    pre = metadata.get("preprocess", {})
    if pre:
        lines.append("- image preparation: " + ", ".join(f"{k} {pre[k]}" for k in sorted(pre)))
    lines += ["", "Training parameters:", "", "```json",
              json.dumps(metadata.get("params", {}), sort_keys=True, indent=2), "```", ""]
    lines += serving_example()
    counts = data.get("counts", {})
    lines += [
        "## Data",
        "",
        f"- shards index sha256: `{data.get('shards_index_sha256', '?')}`",
        "- images: " + ", ".join(f"{s} {counts[s]}" for s in sorted(counts)),
        "- thresholds: per class, max F1 on the validation split (default where a class has no"
        " validation positive)",
        "",
        "## Metrics (test split)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_num(metrics[k])} |" for k in sorted(metrics)]
    if excluded:
        lines += ["", f"Classes without a test positive (no AP, left out of mAP): {', '.join(excluded)}"]
    lines += [
        "",
        "## Per class",
        "",
        "| class | support | predicted | AP | threshold | precision | recall | F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        thr = _num(r["threshold"]) + ("" if r["threshold_tuned"] else " (default)")
        lines.append(
            f"| {r['class']} | {r['support']} | {r['predicted']} | {_num(r['ap'])} | {thr} | "
            f"{_num(r['precision'])} | {_num(r['recall'])} | {_num(r['f1'])} |"
        )
    scored = sorted((r for r in rows if not math.isnan(r["ap"])), key=lambda r: (r["ap"], r["class"]))
    lines += ["", f"## Weakest classes (lowest AP, {min(weakest, len(scored))} shown)", ""]
    lines += [f"- {r['class']}: AP {_num(r['ap'])}, F1 {_num(r['f1'])}, support {r['support']}"
              for r in scored[:weakest]]
    return "\n".join(lines) + "\n"


def serving_example() -> list[str]:
    """The card's "Serving" section: a TF Serving REST request for the ``serving_bytes`` signature."""
    return [
        "## Serving",
        "",
        "The published `saved_model/` takes image files (JPEG or PNG) through its `serving_bytes`",
        "signature and prepares them as training did (decode, resize, JPEG round trip), so its scores",
        "are those of `tagsmith predict` (JPEG EXIF orientation applied; CMYK JPEGs and 16-bit",
        "PNGs excepted).",
        "`serving_default` takes prepared pixels. With TF Serving's REST API:",
        "",
        "```",
        "printf '{\"signature_name\": \"serving_bytes\", \"instances\": [{\"b64\": \"%s\"}]}' \\",
        "  \"$(base64 -w0 photo.jpg)\" > request.json",
        "curl -s -d @request.json http://localhost:8501/v1/models/tagsmith:predict",
        "```",
        "",
        "The answer holds one score per class in `classes` order; apply the per-class thresholds",
        "of `thresholds.json` (`score >= threshold`).",
        "",
    ]
