"""Stage resolve_production: resolve the registry aliases the pipeline reads to version ids.

    python -m tasks.resolve_production

Writes artifacts/production/publish.json, train_frozen.json, and ingest_ledger.tsv (the
production version's split ledger, and the warm-start version's when that is another) with
ingest.json (tasks/registry/resolved.py); ``always_changed`` in dvc.yaml, so it runs on every
``dvc repro`` and flow run (an alias and a manifest read each; a version's ledger is downloaded
once, into .cache/registry), and the stages that read the registry are stale exactly when an
alias they read has moved (``tagsmith registry promote``/``rollback``, or another run's publish).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import RegistryConfig, TrainFrozenConfig, load
from tasks.common.errors import stage_main
from tasks.registry import resolved
from tasks.splits import ledger


def ingest_ledger(prod: dict[str, Any], warm: dict[str, Any], reg: RegistryConfig,
                  cache_dir: Path = paths.REGISTRY_CACHE) -> tuple[dict[str, Any], dict[str, ledger.Entry]]:
    """The ledger ingest keeps: that of the version ``prod`` points at and, when train_frozen
    warm-starts from another version (``warm``, from ``resolved.train_frozen_input``), that one's
    too. The warm-start model trained and validated on its images just as production did, and
    the new model inherits its weights: scoring it on them in test would flatter it. Where the
    two disagree, the warm-start model's train or val split wins (``ledger.merge``).

    Returns:
        (for ingest.json: ``resolved.ingest_input``'s info, with ``warm_start`` naming the second
        version and its ledger's sha256 when one was merged; the merged entries).
    """
    info, path = resolved.ingest_input(prod, reg, cache_dir)
    entries = ledger.read(path) if path else {}  # validated here: a bad file fails the stage
    if warm.get("version") not in (None, prod.get("version")):
        extra, warm_path = resolved.ingest_input(warm, reg, cache_dir)
        info["warm_start"] = {k: extra[k] for k in ("alias", "version", "ledger")}
        if warm_path:
            entries, _ = ledger.merge(entries, ledger.read(warm_path))
    return info, entries


def main() -> None:
    """Entry point of ``python -m tasks.resolve_production``."""
    def body() -> tuple[dict, dict]:
        reg = load(RegistryConfig)
        prod = resolved.publish_input(reg)
        warm = resolved.train_frozen_input(load(TrainFrozenConfig), reg)
        ingest, entries = ingest_ledger(prod, warm, reg)
        return {"publish": prod, "ingest": ingest, "train_frozen": warm}, entries

    inputs, production_ledger = stage_main("resolve_production", body)
    resolved.write(inputs)
    ledger.write(paths.PRODUCTION_LEDGER, production_ledger)
    for stage, data in inputs.items():
        what = (f"{data['store']}/{data['model']}@{data['alias']} = {data['version'] or 'unset'}"
                if "alias" in data else "nothing from the registry")
        if stage == "ingest":
            what += "'s split ledger" if data["ledger"] else " (no split ledger)"
            if "warm_start" in data:
                what += f" and that of the warm-start version {data['warm_start']['version']}"
            what += f" ({len(production_ledger)} images)"
        print(f"resolve_production: {stage} reads {what}")


if __name__ == "__main__":
    main()
