"""The registry as a pipeline input: what each registry-reading stage reads, resolved to a version.

The ``resolve_production`` stage (``always_changed`` in dvc.yaml: the registry is outside the
workspace, so only asking it tells whether an alias moved) writes one small file per
registry-reading stage under ``artifacts/production/``, and that stage lists its file as a
dep. The files hold nothing time-varying, so their bytes, and therefore DVC's fingerprint of
the stage reading them (and the flow's cache key, which is that fingerprint), change exactly
when what the stage reads from the registry changes:

- ``publish.json``: the alias the gate compares with (``registry.store/model_name/alias``) and
  the version it points at (publish always reads it);
- ``train_frozen.json``: the same for its warm-start alias when ``weights: production``;
  with any other ``weights`` the stage reads nothing from the registry and the file says only
  that, so promotes and rollbacks leave training alone. train_frozen then loads exactly the
  version written here (:func:`pinned_version`), never whatever the alias says later;
- ``ingest_ledger.tsv`` (ingest's dep): the split ledger the version behind publish's alias was
  trained with (its ``splits.tsv``), so ingest keeps every split that model saw even when no
  one commits a ledger (a nightly run). It is the ledger's content, not the version id: a
  promote to a version with the same ledger leaves ingest alone. Empty (a header) when the
  alias is unset or its version carries no ledger (tasks/resolve_production.py writes it).
  When ``weights: production`` starts from another version (``train_frozen.warm_start_alias``),
  that version's ledger is merged in (``ingest_ledger`` in tasks/resolve_production.py). ``ingest.json`` says where it
  came from (for the lineage; no stage reads it).

Library only; ``python -m tasks.resolve_production`` runs the stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.common import paths
from tasks.common.config import RegistryConfig, TrainFrozenConfig
from tasks.common.files import sha256_file, write_json
from tasks.registry.client import MANIFEST, SPLITS_FILE, get_alias, s3_options
from tasks.registry.stores import RegistryError, S3Options, Store, open_store

OUT_DIR = paths.PRODUCTION


def resolve_alias(store: str, model: str, alias: str, options: S3Options | None = None) -> dict[str, Any]:
    """{"store", "model", "alias", "version"}; version None when the alias is unset."""
    record = get_alias(open_store(store, options), model, alias)
    return {"store": store, "model": model, "alias": alias, "version": record.version if record else None}


def publish_input(reg: RegistryConfig) -> dict[str, Any]:
    """What publish reads from the registry: the production model its gate compares with."""
    return resolve_alias(reg.store, reg.model_name, reg.alias, s3_options(reg))


def warm_start_alias(cfg: TrainFrozenConfig, reg: RegistryConfig) -> str:
    """The alias ``weights: production`` starts from."""
    return cfg.warm_start_alias or reg.alias


def train_frozen_input(cfg: TrainFrozenConfig, reg: RegistryConfig) -> dict[str, Any]:
    """What train_frozen reads from the registry: the warm-start model, or nothing."""
    if cfg.weights != "production":
        return {"reads_registry": False}
    return resolve_alias(reg.store, reg.model_name, warm_start_alias(cfg, reg), s3_options(reg))


def version_ledger(store: Store, model: str, version: str, cache_dir: Path = paths.REGISTRY_CACHE) -> Path | None:
    """A verified local copy of ``version``'s split ledger (``splits.tsv``), kept in the registry
    cache by version (a version's files never change), so the every-run stage downloads it once.

    Returns:
        The file, or None when the version carries none (published before versions did).
    Raises:
        RegistryError: the version is unknown or incomplete and not cached here, or the
            download does not match its manifest.
    """
    dest = Path(cache_dir) / model / "ledgers" / f"{version}.tsv"
    raw = store.get_bytes(f"{model}/{version}/{MANIFEST}")
    if raw is None:
        if dest.is_file():  # verified when it arrived; the store lost the version (the flow republishes it)
            return dest
        raise RegistryError(f"{store.uri(f'{model}/{version}')}: no {MANIFEST}, so no split ledger of the "
                            f"production version (incomplete or lost); republish it or promote another version")
    want = json.loads(raw)["files"].get(SPLITS_FILE)
    if want is None:
        return None
    if dest.is_file() and sha256_file(dest) == want["sha256"]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
    try:
        store.download(f"{model}/{version}/{SPLITS_FILE}", tmp)
        if sha256_file(tmp) != want["sha256"]:
            raise RegistryError(f"{store.uri(f'{model}/{version}/{SPLITS_FILE}')}: download does not match {MANIFEST}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def ingest_input(prod: dict[str, Any], reg: RegistryConfig, cache_dir: Path = paths.REGISTRY_CACHE
                 ) -> tuple[dict[str, Any], Path | None]:
    """What ingest reads from the registry: the ledger of the version ``prod`` (publish's
    alias, resolved) points at. Publish's alias, because the gate scores production on the
    test split: the images that model trained or validated on must stay out of it.

    Returns:
        (where it came from, for ingest.json: ``ledger`` is its sha256 or None; the ledger file,
        None when there is none).
    """
    info: dict[str, Any] = {**prod, "ledger": None}
    if prod.get("version") is None:
        return info, None
    path = version_ledger(open_store(reg.store, s3_options(reg)), reg.model_name, prod["version"], cache_dir)
    if path is not None:
        info["ledger"] = {"sha256": sha256_file(path)}
    return info, path


def write(inputs: dict[str, dict[str, Any]], out_dir: Path = OUT_DIR) -> None:
    """One ``<stage>.json`` per reading stage (sorted keys: same content, same bytes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stage, data in inputs.items():
        write_json(out_dir / f"{stage}.json", data)


def pinned_version(stage: str, store: str, model: str, alias: str, out_dir: Path = OUT_DIR) -> str | None:
    """The version ``resolve_production`` resolved ``store/model@alias`` to for ``stage``; None
    when it has not run here (a stage run outside the pipeline), resolved another alias, or
    found it unset: the caller then reads the alias itself."""
    path = Path(out_dir) / f"{stage}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if (data.get("store"), data.get("model"), data.get("alias")) != (store, model, alias):
        return None
    return data.get("version")


def production_missing(stage: str, store: str, model: str, alias: str, options: S3Options | None = None,
                       out_dir: Path = OUT_DIR) -> bool:
    """True when ``store/model@alias`` points at no version: as ``resolve_production`` found it
    for ``stage`` (what the stage's fingerprint holds), or, when it has not run here, as the
    registry says now."""
    path = Path(out_dir) / f"{stage}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if (data.get("store"), data.get("model"), data.get("alias")) == (store, model, alias):
        return data.get("version") is None
    return resolve_alias(store, model, alias, options)["version"] is None
