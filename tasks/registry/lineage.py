"""Lineage of a published version: what made it, and how to make it again.

publish writes ``lineage.json`` beside ``metadata.json`` in every version it uploads::

    {"commit", "dirty", "repository", "ref", "data", "params", "parent", "compared_with",
     "registry_inputs", "flow_run": {"id", "name", "url"}}

It is listed in MANIFEST.json (verified like every file) but is not part of the version's
name (client.DERIVED): the name is the model's content, so the same model from two runs is
one version, and publish can tell "already production" before it uploads anything. The first
run to upload a version is the one its lineage names.

``ref`` is the git ref of the run's workspace (params.yaml, dvc.lock, the data's .dvc files,
data.splits.tsv) pushed to ``repository``; the flow names it before the stages run and
passes it to publish in ``TAGSMITH_RUN_REF`` (the ref itself is saved after publish, so the
run's dvc.lock is complete). :func:`reproduce` checks it out into a fresh clone and re-runs the
training stages there, warm-started from the recorded parent, with ingest reading the split
ledger of the production version the run read (``registry_inputs.ingest``).

Library only; ``tagsmith registry show | lineage | reproduce`` wrap it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tasks.common import paths
from tasks.common.errors import TagsmithError
from tasks.common.files import sha256_file, write_json
from tasks.registry.stores import RegistryError, Store

FILE = "lineage.json"
# What the flow tells publish about the run (os.environ of the publish stage)
ENV_REF, ENV_REPOSITORY = "TAGSMITH_RUN_REF", "TAGSMITH_RUN_REPOSITORY"
ENV_RUN_ID, ENV_RUN_NAME, ENV_RUN_URL = "TAGSMITH_FLOW_RUN_ID", "TAGSMITH_FLOW_RUN_NAME", "TAGSMITH_FLOW_RUN_URL"
# The stages a reproduction runs: the model's whole history, without publishing it again
TRAINING = ("ingest", "augment", "train_frozen", "train_full")


class ReproduceError(TagsmithError, RuntimeError):
    """A version cannot be rebuilt (no ref recorded, clone or stage failed); says which."""


def _git(root: Path, *args: str) -> str | None:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def data_version(root: Path) -> dict[str, Any]:
    """The data a workspace holds: data.dvc's hash, or a sliced source's URL and each slice's hash."""
    def out(dvc_file: Path) -> dict[str, Any]:
        spec = yaml.safe_load(dvc_file.read_text()) or {}
        o = (spec.get("outs") or [{}])[0]
        dep = (spec.get("deps") or [{}])[0]
        return {k: v for k, v in {"md5": o.get("md5"), "nfiles": o.get("nfiles"), "url": dep.get("path")}.items() if v}

    root = Path(root)
    if (root / "data.dvc").is_file():
        return {"data.dvc": out(root / "data.dvc")}
    classes = root / "data" / "classes.txt.dvc"
    if not classes.is_file():
        return {}
    src = out(classes).get("url", "")
    return {"source": src.rsplit("/", 1)[0], "classes.txt": out(classes).get("md5"),
            "slices": {p.name.removesuffix(".dvc"): out(p).get("md5")
                       for p in sorted((root / "data" / "slices").glob("*.dvc"))}}


def collect(root: Path = Path("."), env: dict[str, str] | None = None) -> dict[str, Any]:
    """The lineage of the run in workspace ``root`` (run by publish, inside ``dvc repro``).

    It reads the workspace's git state, params.yaml and .dvc files, which are not publish's
    deps: they describe the run, they do not change the model or the gate's decision.
    """
    env = dict(os.environ if env is None else env)
    root = Path(root).resolve()
    inputs = {p.stem: _read_json(p) for p in sorted((root / paths.PRODUCTION).glob("*.json"))}
    warm = inputs.get("train_frozen", {})
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    params = root / paths.PARAMS
    return {
        "commit": _git(root, "rev-parse", "HEAD"),
        "dirty": None if dirty is None else bool(dirty),  # uncommitted changes (the ref holds them)
        "repository": env.get(ENV_REPOSITORY) or _git(root, "remote", "get-url", "origin") or str(root),
        "ref": env.get(ENV_REF) or None,
        "data": data_version(root),
        "params": yaml.safe_load(params.read_text()) if params.is_file() else None,
        "parent": warm.get("version"),  # the warm start (weights: production); None: none
        "compared_with": inputs.get("publish", {}).get("version"),
        "registry_inputs": inputs,
        "flow_run": {"id": env.get(ENV_RUN_ID), "name": env.get(ENV_RUN_NAME), "url": env.get(ENV_RUN_URL)}
        if env.get(ENV_RUN_ID) else None,
    }


def write(dest: Path, lineage: dict[str, Any]) -> None:
    """Put ``lineage.json`` into a version's files (before they are uploaded)."""
    write_json(Path(dest) / FILE, lineage)


def read(store: Store, model: str, version: str) -> dict[str, Any] | None:
    """A version's lineage; None for versions published without one."""
    raw = store.get_bytes(f"{model}/{version}/{FILE}")
    return None if raw is None else json.loads(raw)


def walk(store: Store, model: str, version: str) -> list[dict[str, Any]]:
    """``version`` and its parents, newest first, back to the first model (one without a parent,
    or whose lineage is missing). Each entry: version, parent, ref, commit, flow_run, data."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = version
    while current and current not in seen:
        seen.add(current)
        if store.get_bytes(f"{model}/{current}/MANIFEST.json") is None:
            chain.append({"version": current, "missing": True})
            break
        lin = read(store, model, current) or {}
        chain.append({"version": current, **{k: lin.get(k) for k in ("parent", "ref", "commit", "flow_run", "data")}})
        current = lin.get("parent")
    return chain


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise ReproduceError(f"`{' '.join(cmd[:4])}` failed in {cwd} (exit {out.returncode}):\n"
                             f"{(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout


def _dvc_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSMITH_STAGE")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env["TAGSMITH_CHECKPOINTS"] = "off"  # a rebuild trains; it never resumes another run's checkpoints
    return env


def reproduce(lineage: dict[str, Any], store_uri: str, into: Path, repository: str | None = None,
              log=print) -> Path:  # type: ignore[no-untyped-def]
    """Rebuild a version's model in a fresh clone: its ref checked out, its data restored, its
    parent as the warm start, and ``dvc repro --force`` of the training stages.

    Args:
        lineage: the version's lineage (:func:`read`).
        store_uri: the registry the parent is read from (a local folder is made absolute).
        into: a new or empty folder for the clone.
        repository: where the ref lives (default: the lineage's ``repository``).
    Returns:
        The trained model's folder (``into/artifacts/models/full``).
    Raises:
        ReproduceError: no ref recorded, ``into`` not empty, or a step failed.
    """
    ref, repo = lineage.get("ref"), repository or lineage.get("repository")
    if not ref or not repo:
        raise ReproduceError("this version's lineage names no git ref of its run; it cannot be rebuilt "
                             "(runs record one in a deployment workspace, or with --experiment)")
    into = Path(into).resolve()
    if into.exists() and any(into.iterdir()):
        raise ReproduceError(f"{into} is not empty; reproduce needs a fresh folder")
    local = Path(repo).expanduser()
    log(f"cloning {repo} and checking out {ref}")
    _run(["git", "clone", "--quiet", "--no-checkout", str(local.resolve() if local.is_dir() else repo), str(into)], Path.cwd())
    _run(["git", "fetch", "--quiet", "origin", ref], into)
    _run(["git", "checkout", "--quiet", "--force", "--detach", "FETCH_HEAD"], into)
    # a DVC experiment commits the run's metrics and plots files, which are stage outputs here:
    # DVC refuses to write outputs git tracks, so untrack them in a local commit (the files stay)
    _run(["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", paths.ARTIFACTS.as_posix()], into)
    _run(["git", "-c", "user.name=tagsmith", "-c", "user.email=tagsmith@localhost", "commit", "-q",
          "--allow-empty", "-m", f"reproduce {ref}: stage outputs are DVC's, not git's"], into)
    env, dvc = _dvc_env(), [sys.executable, "-m", "dvc"]
    if local.is_dir() and (local / ".dvc").is_dir():  # its cache holds the data (no remote needed)
        cache = _run(dvc + ["cache", "dir"], local.resolve(), env).strip()
        _run(dvc + ["cache", "dir", "--local", cache], into, env)
    data = ["data.dvc"] if (into / "data.dvc").exists() else [
        p.relative_to(into).as_posix() for p in [into / "data/classes.txt.dvc", *sorted((into / "data/slices").glob("*.dvc"))]
        if p.exists()]
    log(f"restoring the data ({', '.join(data)})")
    try:
        _run(dvc + ["checkout", *data], into, env)
    except ReproduceError:
        _run(dvc + ["pull", *data], into, env)
    # the registry as this machine sees it, and the parent the run read from it, pinned
    store = store_uri if "://" in store_uri else str(Path(store_uri).resolve())
    params = yaml.safe_load((into / paths.PARAMS).read_text())
    params["registry"]["store"] = store
    (into / paths.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    warm = dict(lineage.get("registry_inputs", {}).get("train_frozen") or {"reads_registry": False})
    if "store" in warm:
        warm["store"] = store
    write_json(into / paths.PRODUCTION / "train_frozen.json", warm)
    _pin_ingest_ledger(lineage, into, log)
    for stage in TRAINING:
        log(f"dvc repro --force {stage}")
        _run(dvc + ["repro", "--single-item", "--force", stage], into, env)
    return into / paths.FULL_MODEL


def _pin_ingest_ledger(lineage: dict[str, Any], into: Path, log) -> None:  # type: ignore[no-untyped-def]
    """Write the split ledger the run's ingest read: that of the version it resolved
    (``registry_inputs.ingest``) merged with the warm-start version's when it read that too
    (``ingest_ledger`` in tasks/resolve_production.py), each checked against the sha256 recorded then; empty when the
    run read none (nothing in production, or a run from before versions carried ledgers)."""
    from tasks.common.config import RegistryConfig, load
    from tasks.registry import resolved
    from tasks.registry.client import s3_options
    from tasks.registry.stores import open_store
    from tasks.splits import ledger

    read = lineage.get("registry_inputs", {}).get("ingest") or {}
    entries: dict[str, ledger.Entry] = {}
    for source in (read, read.get("warm_start") or {}):
        want = source.get("ledger")
        if not want:
            continue
        reg = load(RegistryConfig, into / paths.PARAMS)  # the registry as this machine sees it
        path = resolved.version_ledger(open_store(reg.store, s3_options(reg)), read["model"], source["version"],
                                       into / paths.REGISTRY_CACHE)
        if path is None or sha256_file(path) != want["sha256"]:
            raise ReproduceError(f"the split ledger of {source['version']} is not the one the run read "
                                 f"(sha256 {want['sha256'][:12]}…); the run's ingest cannot be repeated")
        entries, _ = ledger.merge(entries, ledger.read(path))
        log(f"ingest keeps the splits of {source['version']}'s ledger")
    ledger.write(into / paths.PRODUCTION_LEDGER, entries)


def same_weights(a: Path, b: Path) -> dict[str, bool]:
    """Whether two model.keras files are byte-identical, and whether their weight arrays are."""
    import numpy as np

    from tasks.model.build import load_model

    same_bytes = Path(a, "model.keras").read_bytes() == Path(b, "model.keras").read_bytes()
    wa, wb = (load_model(Path(p))[0].get_weights() for p in (a, b))
    same = len(wa) == len(wb) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa, wb))
    return {"bytes_equal": same_bytes, "weights_equal": bool(same)}


__all__ = ["FILE", "RegistryError", "ReproduceError", "collect", "data_version", "read", "reproduce",
           "same_weights", "walk", "write"]
