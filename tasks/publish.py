"""Publish stage: quality gate against production, then a content-versioned registry upload.

    python -m tasks.publish

Reads artifacts/models/full, artifacts/eval and artifacts/shards; writes
artifacts/publish/receipt.json and gate.md (no timestamps). The gate (tasks/evaluation/gate.py)
scores production on the same test images as the candidate (evaluate's predictions.csv) and
checks mAP, P@1, per-class AP and optionally a paired bootstrap. If every check passes (or
publish.force), the version is uploaded to registry.store (tasks/registry/client.py) and
registry.alias is moved to it, last, by compare-and-swap against the production version the
gate compared with. The decision is also recorded in the registry (<model>/gate/<version>.json).
Each uploaded version carries lineage.json (tasks/registry/lineage.py): commit, data version,
params, parent, flow run and the git ref of the run, which the flow names in the environment;
and splits.tsv, the split ledger its model was trained with (ingest's artifacts/splits/ledger.tsv),
which later runs' ingest keeps while the version is production (tasks/registry/resolved.py).
A REJECTION EXITS 0: the receipt says "rejected", names the failing checks, and the alias stays
where it was. Registry failures (S3 down, the alias kept moving) exit 1 with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.evaluation import gate, metrics, scoring
from tasks.registry import client as registry, lineage
from tasks.dataset import shards
from tasks.common import paths
from tasks.common.config import PublishConfig, RegistryConfig, load
from tasks.common.errors import DataError, stage_main
from tasks.common.files import write_json
from tasks.dataset.preprocess import Preprocess

MODEL_DIR = paths.FULL_MODEL
SHARD_DIR = paths.SHARDS
SPLITS_LEDGER = paths.SPLITS_LEDGER
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


def stage_files(model_dir: Path, eval_dir: Path, shard_dir: Path, dest: Path, saved_model: bool = True) -> None:
    """Lay out one registry version in ``dest``: model, metadata (+thresholds, preprocess), eval
    files and (``saved_model``) the SavedModel export, which the version name does not cover."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / "model.keras", dest / "model.keras")
    if saved_model:
        export_saved_model(model_dir, dest / "saved_model")
    for name in EVAL_FILES:
        shutil.copyfile(eval_dir / name, dest / name)
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta["thresholds"] = json.loads((eval_dir / "thresholds.json").read_text())
    write_json(dest / "metadata.json", meta)


def candidate_scores(eval_dir: Path) -> tuple[list[str], np.ndarray]:
    """The candidate's test scores as evaluate wrote them (predictions.csv: id, one column per class)."""
    with open(Path(eval_dir) / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float64)


def baseline_scores(version_dir: Path, shard_dir: Path, batch_size: int
                    ) -> tuple[tuple[list[str], np.ndarray, np.ndarray] | None, str]:
    """Production's scores on the current test shards, computed and rounded as evaluate does.

    Returns:
        ((ids, labels, scores) or None when production cannot be compared, note saying why not).
    """
    from tasks.model.build import load_model

    model, meta = load_model(version_dir)
    index = shards.read_index(shard_dir)
    if list(meta["classes"]) != list(index["classes"]):
        return None, "no comparable baseline: production has different classes"
    if int(meta["image_size"]) != int(index["image_size"]):
        return None, "no comparable baseline: production expects another image_size"
    ids, y, s = scoring.rounded_scores(model, shard_dir, "test", batch_size)
    return (ids, y, s.astype(np.float64)), ""


def gate_rules(cfg: PublishConfig) -> gate.Rules:
    """The gate thresholds of the publish section."""
    return gate.Rules(**{name: getattr(cfg, name) for name in gate.Rules.__dataclass_fields__})


def compare_with_production(cfg: PublishConfig, reg: RegistryConfig, prod_version: str,
                            cand: tuple[list[str], np.ndarray], classes: list[str], shard_dir: Path,
                            force: bool) -> tuple[gate.GateDecision, dict[str, Any] | None]:
    """Score production on the candidate's test images and run every gate check.

    Returns:
        (decision, production's summary metrics on those images or None).
    """
    prod_dir = registry.resolve_model_dir(reg.store, reg.model_name, prod_version, paths.REGISTRY_CACHE,
                                          registry.s3_options(reg))
    scored, note = baseline_scores(prod_dir, Path(shard_dir), cfg.batch_size)
    rules = gate_rules(cfg)
    if scored is None:
        return gate.decide(None, prod_version, rules=rules, force=force, note=note), None
    ids, y, s_base = scored
    if ids != cand[0]:
        raise DataError("the candidate's predictions.csv does not list the test images of the shards "
                        "(evaluate and publish must read the same artifacts/shards)")
    checks, unchecked = gate.compare(y, cand[1], s_base, classes, rules)
    thr = scoring.read_thresholds(prod_dir, y.shape[1])
    baseline = scoring.round_metrics(metrics.summary_metrics(y, s_base, thr))
    return gate.decide(checks, prod_version, rules=rules, force=force, unchecked=unchecked), baseline


def run(cfg: PublishConfig, model_dir: Path = MODEL_DIR, shard_dir: Path = SHARD_DIR,
        eval_dir: Path = EVAL_DIR, out_dir: Path = OUT_DIR, *, reg: RegistryConfig,
        splits_ledger: Path | None = SPLITS_LEDGER) -> PublishSummary:
    """Gate, publish and move the alias; write receipt.json and gate.md.

    The alias write is a compare-and-swap against the production version the gate compared
    with: when another writer moved the alias meanwhile, the candidate is compared again
    with the new production model (at most ``cfg.alias_attempts`` comparisons), never
    written over it unseen.

    Args:
        cfg: the publish section (the gate).
        reg: the registry section (where to publish, which alias to move).
        model_dir, shard_dir, eval_dir: the upstream stages' outputs.
        out_dir: where receipt.json and gate.md go.
        splits_ledger: ingest's ledger, published as the version's splits.tsv; None publishes
            a version without one (later ingests then keep none of its splits).
    Returns:
        PublishSummary; a rejection is a normal return, not an exception.
    Raises:
        DataError: ``splits_ledger`` is given but absent (run ingest first).
        registry.RegistryError: the store failed, or the alias kept moving; nothing was
            overwritten.
    """
    if splits_ledger is not None and not Path(splits_ledger).is_file():
        raise DataError(f"{splits_ledger}: no split ledger to publish with the model (ingest writes it; "
                        "a version without one would let its training images reach a later test split)")
    store = registry.open_store(reg.store, registry.s3_options(reg))
    candidate = json.loads((Path(eval_dir) / "metrics.json").read_text())
    classes = list(shards.read_index(Path(shard_dir))["classes"])
    cand = candidate_scores(Path(eval_dir))
    moves: list[dict[str, str | None]] = []  # alias moves by other writers seen while gating
    with tempfile.TemporaryDirectory(prefix="tagsmith-publish-") as tmp:
        files = Path(tmp) / "version"
        stage_files(Path(model_dir), Path(eval_dir), Path(shard_dir), files, saved_model=False)
        lineage.write(files, lineage.collect())  # not part of the version's name (client.DERIVED)
        if splits_ledger is not None:  # nor is this
            shutil.copyfile(splits_ledger, files / registry.SPLITS_FILE)
        version = registry.version_of(registry.build_manifest(files))  # the export is not part of it
        for _ in range(cfg.alias_attempts):
            prod = registry.get_alias(store, reg.model_name, reg.alias)
            baseline = None
            if prod is not None and prod.version == version:
                if not registry.is_complete(store, reg.model_name, version):  # the store lost it
                    export_saved_model(Path(model_dir), files / "saved_model")
                    registry.publish_version(store, reg.model_name, files)
                outcome = "unchanged"
                decision = gate.decide(None, version, rules=gate_rules(cfg), force=False,
                                       note=f"'{reg.alias}' already is this content version; nothing to compare")
                break
            if prod is None:
                decision = gate.decide(None, None, rules=gate_rules(cfg), force=cfg.force)
            else:
                decision, baseline = compare_with_production(cfg, reg, prod.version, cand, classes, Path(shard_dir), cfg.force)
            if not decision.publish:
                outcome = "rejected"
                break
            if not (files / "saved_model").exists():
                export_saved_model(Path(model_dir), files / "saved_model")
            registry.publish_version(store, reg.model_name, files)
            try:
                registry.set_alias(store, reg.model_name, reg.alias, version,
                                   expected=prod.version if prod else None, via="publish")
            except registry.AliasConflict as e:
                moves.append({"from": prod.version if prod else None, "to": e.winner.version if e.winner else None})
                print(f"publish: '{reg.alias}' moved to {moves[-1]['to']} while gating {version}; "
                      "comparing again with it")
                continue
            outcome = "forced" if decision.forced else "published"
            break
        else:
            raise registry.RegistryError(
                f"'{reg.alias}' moved {len(moves)} times while {version} was being gated "
                f"({' -> '.join(str(m['to']) for m in moves)}); it was not overwritten. Re-run publish "
                f"to compare with the production model then current.")
    moved = outcome in ("published", "forced")
    receipt = {
        "model_name": reg.model_name, "store": reg.store, "alias": reg.alias, "version": version,
        "uri": store.uri(f"{reg.model_name}/{version}"), "outcome": outcome,
        "published": moved or outcome == "unchanged", "alias_moved": moved,
        "alias_version": version if moved or outcome == "unchanged" else (prod.version if prod else None),
        "alias_previous": (prod.version if prod else None) if moved else None,
        "compared_with": decision.baseline_version if outcome != "unchanged" else None,
        "alias_moves_seen": moves,
        "gate": decision.as_dict(), "candidate": candidate, "baseline": baseline,
    }
    if outcome != "unchanged":  # `tagsmith registry show <version>` shows why it is (not) production
        registry.record_gate(store, reg.model_name, version, {k: receipt[k] for k in (
            "alias", "outcome", "compared_with", "gate", "candidate", "baseline")})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "receipt.json", receipt)
    (out_dir / "gate.md").write_text(gate.render_report(decision, outcome, version, reg.alias, candidate, baseline))
    return PublishSummary(outcome, version, receipt)


def main() -> None:
    """Entry point of ``python -m tasks.publish``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    s = stage_main("publish", lambda: run(load(PublishConfig), reg=load(RegistryConfig)))
    g = s.receipt["gate"]
    if s.outcome == "rejected":
        print(f"publish: gate REJECTED {s.version} against {g['baseline_version']}: {g['reason']}")
        print(f"publish: failing checks: {', '.join(g['failed'])} (tagsmith registry show {s.version})")
        print(f"publish: not published, alias '{s.receipt['alias']}' not moved "
              "(a gate decision, not a failure; set publish.force=true to override)")
    elif s.outcome == "unchanged":
        print(f"publish: {s.version} is already '{s.receipt['alias']}'; nothing to do")
    else:
        print(f"publish: gate {'FORCED' if g['forced'] else 'passed'}: {g['reason']}")
        print(f"publish: {s.receipt['alias']} -> {s.version} at {s.receipt['uri']}")


if __name__ == "__main__":
    main()
