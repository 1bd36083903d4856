"""Publish stage: quality gate against production, then a content-versioned registry upload.

    python -m tasks.publish

Reads artifacts/models/full, artifacts/eval and artifacts/shards; writes
artifacts/publish/receipt.json and gate.md (no timestamps). The gate (tasks/evaluation/gate.py) compares
the candidate's test mAP with production's, recomputed on the same test shards. If it passes
(or publish.force), the version is uploaded to publish.store (tasks/registry/client.py) and
publish.alias is moved to it, last. A REJECTION EXITS 0: the receipt says "rejected" and
the alias stays where it was. Registry failures (S3 down...) exit 1 with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.evaluation import gate, scoring
from tasks.registry import client as registry
from tasks.dataset import shards
from tasks.common import paths
from tasks.common.config import PublishConfig, load
from tasks.common.errors import stage_main
from tasks.common.files import write_json
from tasks.dataset.preprocess import Preprocess

MODEL_DIR = paths.FULL_MODEL
SHARD_DIR = paths.SHARDS
EVAL_DIR = paths.EVAL
OUT_DIR = paths.PUBLISH
EVAL_FILES = ("thresholds.json", "metrics.json", "model_card.md")


@dataclass
class PublishSummary:
    """What the publish stage decided and did."""

    outcome: str  # published | forced | rejected | unchanged
    version: str
    receipt: dict[str, Any]


def export_saved_model(model_dir: Path, out: Path) -> None:
    """Export the SavedModel for TF Serving, with ``serving_bytes`` (tasks/serving/signature.py)
    next to the pixel signature (made here, not by train_full: its bytes differ on every export,
    which would make train_full's DVC output irreproducible)."""
    from tasks.model.build import load_model
    from tasks.serving.signature import export

    model, meta = load_model(model_dir)
    export(model, Preprocess.from_metadata(meta, model_dir), out)


def stage_files(model_dir: Path, eval_dir: Path, shard_dir: Path, dest: Path) -> None:
    """Lay out one registry version in ``dest``: model, metadata (+thresholds), eval files."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / "model.keras", dest / "model.keras")
    export_saved_model(model_dir, dest / "saved_model")
    for name in EVAL_FILES:
        shutil.copyfile(eval_dir / name, dest / name)
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta["thresholds"] = json.loads((eval_dir / "thresholds.json").read_text())
    write_json(dest / "metadata.json", meta)


def baseline_metrics(version_dir: Path, shard_dir: Path, batch_size: int) -> tuple[dict | None, str]:
    """Production's numbers on the current test shards, computed as evaluate computes them.

    Returns:
        (metrics or None when production cannot be compared, note saying why not).
    """
    from tasks.model.build import load_model

    model, meta = load_model(version_dir)
    index = shards.read_index(shard_dir)
    if list(meta["classes"]) != list(index["classes"]):
        return None, "no comparable baseline: production has different classes"
    if int(meta["image_size"]) != int(index["image_size"]):
        return None, "no comparable baseline: production expects another image_size"
    thr = scoring.read_thresholds(version_dir, len(meta["classes"]))
    return scoring.split_metrics(model, shard_dir, "test", batch_size, thr), ""


def run(cfg: PublishConfig, model_dir: Path = MODEL_DIR, shard_dir: Path = SHARD_DIR,
        eval_dir: Path = EVAL_DIR, out_dir: Path = OUT_DIR) -> PublishSummary:
    """Gate, publish and move the alias; write receipt.json and gate.md.

    Args:
        cfg: the publish section.
        model_dir, shard_dir, eval_dir: the upstream stages' outputs.
        out_dir: where receipt.json and gate.md go.
    Returns:
        PublishSummary; a rejection is a normal return, not an exception.
    Raises:
        registry.RegistryError: the store failed; nothing was aliased.
    """
    opts = registry.s3_options(cfg)
    store = registry.open_store(cfg.store, opts)
    candidate = json.loads((Path(eval_dir) / "metrics.json").read_text())
    prod = registry.get_alias(store, cfg.model_name, cfg.alias)
    with tempfile.TemporaryDirectory(prefix="tagsmith-publish-") as tmp:
        files = Path(tmp) / "version"
        stage_files(Path(model_dir), Path(eval_dir), Path(shard_dir), files)
        version = registry.version_of(registry.build_manifest(files))
        baseline, note = None, ""
        if prod is not None and prod.version != version:
            prod_dir = registry.resolve_model_dir(cfg.store, cfg.model_name, prod.version,
                                                  Path(cfg.cache_dir), opts)
            baseline, note = baseline_metrics(prod_dir, Path(shard_dir), cfg.batch_size)
        decision = gate.decide(candidate["map"], None if baseline is None else baseline["map"],
                               prod.version if prod else None, max_map_drop=cfg.max_map_drop,
                               must_improve=cfg.must_improve, force=cfg.force, note=note)
        if prod is not None and prod.version == version:
            outcome = "unchanged"
            decision = gate.decide(candidate["map"], None, version, max_map_drop=cfg.max_map_drop,
                                   must_improve=cfg.must_improve, force=False,
                                   note=f"'{cfg.alias}' already is this content version; nothing to compare")
        elif decision.publish:
            registry.publish_version(store, cfg.model_name, files)
            registry.set_alias(store, cfg.model_name, cfg.alias, version)
            outcome = "forced" if decision.forced else "published"
        else:
            outcome = "rejected"
    moved = outcome in ("published", "forced")
    receipt = {
        "model_name": cfg.model_name, "store": cfg.store, "alias": cfg.alias, "version": version,
        "uri": store.uri(f"{cfg.model_name}/{version}"), "outcome": outcome,
        "published": moved or outcome == "unchanged", "alias_moved": moved,
        "alias_version": version if moved or outcome == "unchanged" else (prod.version if prod else None),
        "alias_previous": (prod.version if prod else None) if moved else None,
        "gate": decision.as_dict(), "candidate": candidate, "baseline": baseline,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "receipt.json", receipt)
    (out_dir / "gate.md").write_text(gate.render_report(decision, outcome, version, cfg.alias, candidate, baseline))
    return PublishSummary(outcome, version, receipt)


def main() -> None:
    """Entry point of ``python -m tasks.publish``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s = stage_main("publish", lambda: run(load(PublishConfig)))
    g = s.receipt["gate"]
    if s.outcome == "rejected":
        print(f"publish: gate REJECTED {s.version}: {g['reason']}")
        print(f"publish: not published, alias '{s.receipt['alias']}' not moved "
              "(a gate decision, not a failure; set publish.force=true to override)")
    elif s.outcome == "unchanged":
        print(f"publish: {s.version} is already '{s.receipt['alias']}'; nothing to do")
    else:
        print(f"publish: gate {'FORCED' if g['forced'] else 'passed'}: {g['reason']}")
        print(f"publish: {s.receipt['alias']} -> {s.version} at {s.receipt['uri']}")


if __name__ == "__main__":
    main()
