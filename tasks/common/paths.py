"""The artifact layout: where each stage writes, relative to the workspace root.

The one place that names these folders for Python code (stages, flows, tests); ``dvc.yaml``
names the same folders as outs and deps, and tests/code/test_dvc_yaml.py checks that the two
agree. Paths are relative so the same names work in any workspace (``root / paths.EVAL``).
"""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
DATA = Path("data")  # the dataset root tracked by data.dvc (the ingest.root default)
ARTIFACTS = Path("artifacts")

DATASET = ARTIFACTS / "dataset"  # ingest: manifest.csv, quarantine.csv, stats.json, plots
SPLITS = ARTIFACTS / "splits"  # ingest: ledger.tsv (the split ledger extended), summary.json
SHARDS = ARTIFACTS / "shards"  # augment: TFRecord shards, index.json, policy.json, preview.png
MODELS = ARTIFACTS / "models"  # train_frozen and train_full: one folder per phase
EVAL = ARTIFACTS / "eval"  # evaluate: metrics.json, per_class.csv, thresholds.json, plots
PUBLISH = ARTIFACTS / "publish"  # publish: receipt.json, gate.md
PRODUCTION = ARTIFACTS / "production"  # resolve_production: the alias versions each stage reads
# resolve_production: the split ledger the production model was trained with (ingest's dep)
PRODUCTION_LEDGER = PRODUCTION / "ingest_ledger.tsv"
SPLITS_LEDGER = SPLITS / "ledger.tsv"  # ingest: the ledger extended (publish puts it into the version)
# Versions read from an S3 registry are downloaded (and verified) here, by every reader
REGISTRY_CACHE = Path(".cache/registry")


def model_dir(phase: str) -> Path:
    """The output folder of a training phase (``frozen`` or ``full``)."""
    return MODELS / phase


# The model folder evaluate and publish read: the end of training.
FULL_MODEL = model_dir("full")
