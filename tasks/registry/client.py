"""Versioned model registry on a store (local folder or S3; see tasks/registry/stores.py).

Layout::

    <store>/<model>/<version>/model.keras, saved_model/..., metadata.json, thresholds.json,
                              metrics.json, model_card.md, lineage.json, splits.tsv, MANIFEST.json
    <store>/<model>/aliases/<alias>.json   {"version", "set_at", "by", "via", "previous", "history"}
    <store>/<model>/gate/<version>.json    the last gate decision about a candidate (publish)

A version's name comes from its content: "v-" + the first 12 hex of the sha256 of its
manifest (path -> sha256 + size of every file), so publishing the same files twice is a
no-op. Write order is the safety: files first (each verified), MANIFEST.json after them,
then the whole version is verified against it, and only then may an alias point at it. A
version without MANIFEST.json is incomplete and never resolved; an interrupted publish
leaves at most such a folder, and a re-run completes it.

An alias write is compare-and-swap (the store's ``put_if``): it replaces exactly the alias
object the writer read, so of two promotes, rollbacks or publishes racing on one alias one
wins and the other gets ``AliasConflict`` naming the winner; nothing is silently lost. The
alias object carries its own history (every write that won, oldest first), so the history
cannot disagree with the alias: it is one object written in one conditional write.

Library only (the lead's CLI `tagsmith registry ...` wraps these); functions return data.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.common.config import RegistryConfig
from tasks.common.files import json_text, sha256_file
from tasks.registry.stores import RegistryError, S3Options, Store, WriteConflict, open_store

MANIFEST = "MANIFEST.json"
REQUIRED = ("model.keras", "metadata.json", "thresholds.json", "metrics.json", "model_card.md")

__all__ = ["AliasConflict", "AliasRecord", "RegistryError", "S3Options", "SPLITS_FILE", "Store", "VersionInfo", "build_manifest",
           "get_alias", "is_complete", "list_versions", "open_store", "promote", "publish_version", "record_gate", "resolve",
           "resolve_model_dir", "rollback", "s3_options", "set_alias", "show", "verify", "version_of"]


HISTORY_MAX = 200  # alias writes kept in the alias object (read on every resolve: keep it small)


@dataclass(frozen=True)
class AliasRecord:
    """What an alias object holds."""

    version: str
    set_at: str
    by: str
    previous: str | None
    via: str | None = None  # promote | rollback | publish
    history: list[dict[str, Any]] = field(default_factory=list)  # {"version", "set_at", "by", "via"}


class AliasConflict(RegistryError):
    """An alias write that lost: the alias moved between the writer's read and its write."""

    def __init__(self, message: str, alias: str, wanted: str, winner: AliasRecord | None) -> None:
        super().__init__(message)
        self.alias, self.wanted, self.winner = alias, wanted, winner


ANY = object()  # set_alias(expected=ANY): whatever the alias pointed at when read


@dataclass(frozen=True)
class VersionInfo:
    """One entry of ``list_versions``."""

    version: str
    complete: bool  # MANIFEST.json present (``verify`` checks the bytes too)
    aliases: list[str]
    map: float | None  # test mAP from its metrics.json, if readable


def build_manifest(files_dir: Path) -> dict[str, Any]:
    """{"files": {relative posix path: {"sha256", "size"}}} of every file under ``files_dir``."""
    root = Path(files_dir)
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST:
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return {"files": files}


# TensorFlow's SavedModel export is not byte-reproducible (random fingerprint, generated
# function names), lineage.json describes the run that uploaded the model, not the model
# (tasks/registry/lineage.py), and splits.tsv is the split ledger the run's ingest wrote
# (which later runs keep: tasks/registry/resolved.py), so the version names the model by
# everything else; those files are still listed with their sha256 in the manifest and
# verified like the rest.
SPLITS_FILE = "splits.tsv"
DERIVED = ("saved_model/", "lineage.json", SPLITS_FILE)


def version_of(manifest: dict[str, Any]) -> str:
    """The content-derived version name of a manifest (derived exports excluded)."""
    files = {k: v for k, v in manifest["files"].items() if not k.startswith(DERIVED)}
    canon = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return "v-" + hashlib.sha256(canon).hexdigest()[:12]


def s3_options(cfg: RegistryConfig) -> S3Options:
    """The S3 client settings of the registry section."""
    return S3Options(endpoint_url=cfg.endpoint_url, max_attempts=cfg.s3_max_attempts,
                     multipart_threshold_mb=cfg.multipart_threshold_mb)


def is_complete(store: Store, model: str, version: str) -> bool:
    """Whether ``version`` is in the store with its MANIFEST.json (written last: so complete).

    A cheap presence check (one HEAD request); :func:`verify` re-hashes every file.
    """
    return store.size(f"{model}/{version}/{MANIFEST}") is not None


def _json(store: Store, key: str) -> Any | None:
    raw = store.get_bytes(key)
    return None if raw is None else json.loads(raw)


def _dump(obj: Any) -> bytes:
    return json_text(obj).encode()


def verify(store: Store, model: str, version: str) -> list[str]:
    """Check a version against its MANIFEST.json.

    Returns:
        Problems (empty = complete and intact): missing manifest, a manifest that does not hash
        to the version name, missing files, size or sha256 mismatches.
    """
    manifest = _json(store, f"{model}/{version}/{MANIFEST}")
    if manifest is None:
        return [f"{store.uri(f'{model}/{version}')}: no {MANIFEST} (incomplete or unknown version)"]
    problems = []
    if version_of(manifest) != version:
        problems.append(f"{MANIFEST} of {version} hashes to {version_of(manifest)}")
    for rel, want in sorted(manifest["files"].items()):
        key = f"{model}/{version}/{rel}"
        size = store.size(key)
        if size is None:
            problems.append(f"{store.uri(key)}: missing")
        elif size != want["size"]:
            problems.append(f"{store.uri(key)}: size {size} != {want['size']}")
        elif store.sha256(key) != want["sha256"]:
            problems.append(f"{store.uri(key)}: sha256 differs from the manifest")
    return problems


def publish_version(store: Store, model_name: str, files_dir: Path) -> str:
    """Upload the files of ``files_dir`` as a new version (no-op if it is already complete).

    Args:
        store: the registry store.
        model_name: the registry's model name (first path level).
        files_dir: model.keras, metadata.json, thresholds.json, metrics.json, model_card.md
            and optionally saved_model/ (anything else under it is published too).
    Returns:
        The version name.
    Raises:
        RegistryError: a required file is missing, an upload failed, or the result does not
            verify. No alias is touched either way.
    """
    missing = [f for f in REQUIRED if not (Path(files_dir) / f).is_file()]
    if missing:
        raise RegistryError(f"{files_dir}: missing {missing}; cannot publish")
    manifest = build_manifest(files_dir)
    version = version_of(manifest)
    if not verify(store, model_name, version):
        return version
    try:
        for rel, want in manifest["files"].items():
            key = f"{model_name}/{version}/{rel}"
            # A re-run after an interruption keeps what already arrived intact.
            if store.size(key) == want["size"] and store.sha256(key) == want["sha256"]:
                continue
            store.put_file(Path(files_dir) / rel, key, want["sha256"])
        store.put_bytes(f"{model_name}/{version}/{MANIFEST}", _dump(manifest))
    except RegistryError as e:
        raise RegistryError(f"publishing {model_name}/{version} was interrupted (the version stays "
                            f"incomplete, no alias was moved; re-run to complete it): {e}") from e
    problems = verify(store, model_name, version)
    if problems:
        raise RegistryError(f"published {version} does not verify: {'; '.join(problems)}")
    return version


def _record(raw: dict[str, Any]) -> AliasRecord:
    fields = {k: raw[k] for k in AliasRecord.__dataclass_fields__ if k in raw}
    fields.setdefault("previous", None)
    return AliasRecord(**{**fields, "history": list(raw.get("history") or [])})


def _read_alias(store: Store, model: str, alias: str) -> tuple[AliasRecord | None, str | None]:
    """(record, the store's token for that exact state), (None, None) when unset."""
    got = store.get_tagged(f"{model}/aliases/{alias}.json")
    return (None, None) if got is None else (_record(json.loads(got[0])), got[1])


def get_alias(store: Store, model: str, alias: str) -> AliasRecord | None:
    """The alias record, or None when the alias was never set."""
    return _read_alias(store, model, alias)[0]


def _conflict(store: Store, model: str, alias: str, wanted: str, why: str) -> AliasConflict:
    winner = get_alias(store, model, alias)
    now = (f"it now points at {winner.version} (set by {winner.by} via {winner.via or 'set'} at "
           f"{winner.set_at})") if winner else "it is now unset"
    return AliasConflict(f"{store.uri(f'{model}/aliases/{alias}.json')}: not moved to {wanted}: {why}; "
                         f"{now}. Nothing was overwritten; check the new target and retry if "
                         f"{wanted} should still replace it.", alias, wanted, winner)


def set_alias(store: Store, model: str, alias: str, version: str, by: str | None = None, *,
              expected: object = ANY, via: str = "promote") -> AliasRecord:
    """Point ``alias`` at ``version`` with a compare-and-swap; a no-op if it already does.

    Args:
        store, model, alias: which alias.
        version: a complete version (verified first).
        by: who (default: $TAGSMITH_USER, else the login name).
        expected: the version the caller's decision was based on (None: unset); ANY accepts
            whatever the alias holds when read here.
        via: what moved it (promote | rollback | publish), kept in the record and its history.
    Returns:
        The record now in the store.
    Raises:
        AliasConflict: the alias is not at ``expected``, or another writer moved it between
            this read and this write (the error names the winner; nothing is overwritten).
        RegistryError: the version is incomplete or damaged.
    """
    problems = verify(store, model, version)
    if problems:
        raise RegistryError(f"refusing to point {alias!r} at {version}: {'; '.join(problems)}")
    current, token = _read_alias(store, model, alias)
    if expected is not ANY and (current.version if current else None) != expected:
        raise _conflict(store, model, alias, version, f"it no longer points at {expected or 'nothing'}")
    if current is not None and current.version == version:
        return current
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    who = by or os.environ.get("TAGSMITH_USER") or getpass.getuser()
    past = list(current.history) if current else []
    if current is not None and not past:  # a record written before aliases kept a history
        past = [{"version": current.version, "set_at": current.set_at, "by": current.by, "via": current.via}]
    entry = {"version": version, "set_at": now, "by": who, "via": via}
    record = AliasRecord(version=version, set_at=now, by=who, previous=current.version if current else None,
                         via=via, history=(past + [entry])[-HISTORY_MAX:])
    try:
        store.put_if(f"{model}/aliases/{alias}.json", _dump(asdict(record)), token)
    except WriteConflict:
        raise _conflict(store, model, alias, version, "another writer moved it first") from None
    return record


def promote(store: Store, model: str, version: str, alias: str = "production", by: str | None = None) -> AliasRecord:
    """Point ``alias`` at ``version`` (a version name, or another alias to copy).

    Raises:
        AliasConflict: another write to the alias won the race (named in the message).
    """
    return set_alias(store, model, alias, resolve(store, model, version), by, via="promote")


def rollback(store: Store, model: str, alias: str = "production", by: str | None = None) -> AliasRecord:
    """Move ``alias`` back to its previous version (a second rollback undoes the first).

    Raises:
        RegistryError: the alias is unset or has no previous version.
        AliasConflict: the alias moved while rolling back (named in the message).
    """
    current = get_alias(store, model, alias)
    if current is None or not current.previous:
        raise RegistryError(f"{store.uri(f'{model}/aliases/{alias}.json')}: nothing to roll back to")
    return set_alias(store, model, alias, current.previous, by, expected=current.version, via="rollback")


def _aliases(store: Store, model: str) -> dict[str, str]:
    """alias name -> version."""
    out = {}
    for key in store.list_keys(f"{model}/aliases"):
        if not key.endswith(".json"):
            continue
        name = key.rsplit("/", 1)[1].removesuffix(".json")
        rec = get_alias(store, model, name)
        if rec is not None:
            out[name] = rec.version
    return out


def list_versions(store: Store, model: str) -> list[VersionInfo]:
    """Every version folder of ``model``, sorted by name, with its aliases and test mAP."""
    keys = store.list_keys(model)
    versions = sorted({k.split("/")[1] for k in keys
                       if k.count("/") >= 2 and k.split("/")[1] not in ("aliases", "gate")})
    aliases = _aliases(store, model)
    out = []
    for v in versions:
        complete = f"{model}/{v}/{MANIFEST}" in keys
        metrics = _json(store, f"{model}/{v}/metrics.json") if complete else None
        out.append(VersionInfo(v, complete, sorted(a for a, t in aliases.items() if t == v),
                               None if not metrics else metrics.get("map")))
    return out


def resolve(store: Store, model: str, ref: str) -> str:
    """A version name or alias -> a complete version name.

    Raises:
        RegistryError: neither a complete version nor a set alias.
    """
    if store.get_bytes(f"{model}/{ref}/{MANIFEST}") is not None:
        return ref
    rec = get_alias(store, model, ref)
    if rec is None:
        raise RegistryError(f"{store.uri(model)}: {ref!r} is neither a complete version nor an alias")
    return rec.version


def record_gate(store: Store, model: str, version: str, decision: dict[str, Any]) -> None:
    """Keep the publish gate's latest decision about ``version`` (also for refused candidates,
    which have no version folder) at ``<model>/gate/<version>.json``."""
    store.put_bytes(f"{model}/gate/{version}.json", _dump({"version": version, **decision}))


def show(store: Store, model: str, ref: str) -> dict[str, Any]:
    """Everything about one version (``ref``: version or alias): manifest, metadata, metrics,
    aliases, uri, the problems ``verify`` finds and the gate's last decision about it. A
    candidate the gate refused is not in the registry; for it, the decision alone (its checks,
    the failing ones named, and the production version it was compared with)."""
    gate = _json(store, f"{model}/gate/{ref}.json")
    try:
        version = resolve(store, model, ref)
    except RegistryError:
        if gate is None:
            raise
        return {"version": ref, "published": False, "gate": gate}
    return {
        "version": version,
        "uri": store.uri(f"{model}/{version}"),
        "aliases": sorted(a for a, v in _aliases(store, model).items() if v == version),
        "alias_records": {a: asdict(get_alias(store, model, a)) for a in ([ref] if ref != version else [])},
        "manifest": _json(store, f"{model}/{version}/{MANIFEST}"),
        "metadata": _json(store, f"{model}/{version}/metadata.json"),
        "lineage": _json(store, f"{model}/{version}/lineage.json"),  # None: published without one
        "metrics": _json(store, f"{model}/{version}/metrics.json"),
        "problems": verify(store, model, version),
        "gate": gate if ref == version else _json(store, f"{model}/gate/{version}.json"),
    }


def _local_matches(folder: Path, manifest: dict[str, Any]) -> bool:
    return all((folder / rel).is_file() and sha256_file(folder / rel) == w["sha256"]
               for rel, w in manifest["files"].items())


def resolve_model_dir(
    store_uri: str, model_name: str, alias_or_version: str, cache_dir: Path,
    options: S3Options | None = None,
) -> Path:
    """A local folder holding the verified files of a registry version.

    Args:
        store_uri: the store (local folder or s3://bucket/prefix).
        model_name: the registry model name.
        alias_or_version: e.g. "production" or "v-0123456789ab".
        cache_dir: where S3 versions are downloaded (<cache_dir>/<model>/<version>/).
        options: S3 client settings.
    Returns:
        The version folder (in the store itself for local stores; in the cache for S3).
    Raises:
        RegistryError: unknown reference, incomplete/damaged version, failed download.
    """
    store = open_store(store_uri, options)
    version = resolve(store, model_name, alias_or_version)
    if hasattr(store, "root"):  # local: the store folder is already a plain folder
        problems = verify(store, model_name, version)
        if problems:
            raise RegistryError("; ".join(problems))
        return Path(store.root) / model_name / version
    manifest = _json(store, f"{model_name}/{version}/{MANIFEST}")
    if manifest is None or version_of(manifest) != version:
        raise RegistryError(f"{store.uri(f'{model_name}/{version}')}: missing or inconsistent {MANIFEST}")
    dest = Path(cache_dir) / model_name / version
    if dest.is_dir() and _local_matches(dest, manifest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".tmp-{version}-"))
    try:
        for rel in manifest["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            store.download(f"{model_name}/{version}/{rel}", tmp / rel)
        if not _local_matches(tmp, manifest):
            raise RegistryError(f"{store.uri(f'{model_name}/{version}')}: download does not match {MANIFEST}")
        (tmp / MANIFEST).write_bytes(_dump(manifest))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
