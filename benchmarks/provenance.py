"""Which code a result came from: the git commit and whether the working tree was dirty.

A figure is only worth re-running if its code can be checked out again, so every result file
records ``{"commit", "dirty", "dirty_paths"}`` and ``python -m benchmarks.run`` refuses to write
into the committed results folder from a dirty tree unless told (``--allow-dirty``,
``make bench ALLOW_DIRTY=1`` or ``TAGSMITH_ALLOW_DIRTY=1``).

The results folder itself and ``dvc.lock`` (written by ``make demo``, not committed) do not
count as dirt: a run that writes ``input_pipeline.json`` must not make the next benchmark of
the same run dirty.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

# Paths whose changes say nothing about the code that ran (git pathspec exclusions).
NOT_CODE = ("benchmarks/results", "dvc.lock")
MAX_LISTED = 20


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def provenance(root: Path) -> dict[str, Any]:
    """The commit checked out at ``root`` and the uncommitted changes to code.

    Returns:
        ``{"commit": sha or None, "dirty": bool or None, "dirty_paths": [...]}``; ``None``
        values when ``root`` is not a git checkout (or git is missing): unknown, not clean.
        ``dirty_paths`` lists at most ``MAX_LISTED`` entries of ``git status --porcelain``
        (modified, staged and untracked files; ignored ones are not code).
    """
    sha = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", ".", *(f":!{p}" for p in NOT_CODE))
    if sha is None or status is None:
        return {"commit": None, "dirty": None, "dirty_paths": []}
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": sha.strip(), "dirty": bool(paths), "dirty_paths": paths[:MAX_LISTED]}


def describe(prov: dict[str, Any] | None) -> str:
    """One line for humans: where the figures of a result file came from."""
    if not prov:
        return "recorded before provenance: not from a known commit"
    if prov.get("commit") is None:
        return "not from a git checkout: commit unknown"
    short = prov["commit"][:10]
    if prov.get("dirty"):
        return f"commit {short} with UNCOMMITTED changes ({len(prov.get('dirty_paths', []))} paths)"
    return f"commit {short} (clean tree)"
