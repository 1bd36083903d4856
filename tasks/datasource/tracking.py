"""Make a repository follow a sliced source with DVC: one ``dvc import-url`` per slice.

``data/classes.txt.dvc`` imports the source's ``classes.txt``; ``data/slices/<id>.dvc`` imports
one complete slice's prefix. Each .dvc file records the source URL and the version it imported
(ETag or md5 per file), so a commit pins the exact data.

Why one import per slice, not one of the whole source: DVC re-downloads a whole imported
directory when anything in it changes (treeverse/dvc#4889, #8808) and checks every file of it on
each update (dvc#8373), so the cost of a new slice would grow with the dataset. A slice never
changes once complete, so its import never needs updating: ``update`` refreshes classes.txt (one
small file) and imports only the slices the repository does not track yet.

Library only; ``tagsmith data track`` / ``tagsmith data update`` use it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from tasks.common.errors import TagsmithError
from tasks.datasource.store import open_source
from tasks.datasource.slices import CLASSES, complete_slices

DATA = Path("data")
CLASSES_DVC = DATA / f"{CLASSES}.dvc"
SLICES = DATA / "slices"


class TrackError(TagsmithError, RuntimeError):
    """The repository cannot follow the source (names what to do)."""


def _dvc(root: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if out.returncode != 0:
        raise TrackError(f"dvc {' '.join(args)} failed:\n{(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout


def _fs_config() -> list[str]:
    """DVC's S3 filesystem does not read AWS_ENDPOINT_URL, so an S3-compatible endpoint is passed
    explicitly (and recorded in the .dvc file, as the place that version came from)."""
    url = os.environ.get("AWS_ENDPOINT_URL")
    return ["--fs-config", f"endpointurl={url}"] if url else []


def _join(source: str, key: str) -> str:
    return f"{source.rstrip('/')}/{key}" if "://" in source else str(Path(source).resolve() / key)


def tracked_source(root: Path) -> str | None:
    """The source URI the repository follows (from data/classes.txt.dvc), or None."""
    path = root / CLASSES_DVC
    if not path.is_file():
        return None
    url = yaml.safe_load(path.read_text())["deps"][0]["path"]
    return url.removesuffix("/" + CLASSES)


def tracked_slices(root: Path) -> list[str]:
    return sorted(p.name.removesuffix(".dvc") for p in (root / SLICES).glob("*.dvc"))


def _import_slices(root: Path, source: str, ids: list[str], log: Callable[[str], None]) -> None:
    for n, sid in enumerate(ids, start=1):
        log(f"[{n}/{len(ids)}] importing slice {sid}")
        # options after the positionals: dvc's parser takes --fs-config's values greedily
        _dvc(root, "import-url", _join(source, f"slices/{sid}"), (SLICES / sid).as_posix(), *_fs_config())


def track(root: Path, source: str, replace: bool = False, log: Callable[[str], None] = print) -> list[str]:
    """Follow ``source`` (a folder or s3://bucket/prefix): import its classes.txt and every
    complete slice. Returns the slice ids imported.

    A repository that versions ``data/`` as a whole (``data.dvc``) must say ``replace``: that
    stops tracking it (``dvc remove data.dvc``; the old version stays in git history and the DVC
    cache) and removes the folder, which the imports then fill.
    """
    root = Path(root)
    slices = list(complete_slices(open_source(source)))
    if not slices:
        raise TrackError(f"{source}: no complete slice yet (add one with `tagsmith data add`)")
    if tracked_source(root):
        raise TrackError(f"this repository already follows {tracked_source(root)}: run `tagsmith data update`")
    if (root / "data.dvc").exists():
        if not replace:
            raise TrackError("data.dvc versions data/ as a whole; pass --replace to follow the source instead")
        _dvc(root, "remove", "data.dvc")
    if (root / DATA).exists():
        if not replace:
            raise TrackError(f"{root / DATA} exists; pass --replace to replace it with the source's slices")
        shutil.rmtree(root / DATA)
    _unignore_data(root)
    (root / SLICES).mkdir(parents=True)
    log(f"importing {_join(source, CLASSES)}")
    _dvc(root, "import-url", _join(source, CLASSES), CLASSES_DVC.with_suffix("").as_posix(), *_fs_config())
    _import_slices(root, source, slices, log)
    return slices


def update(root: Path, log: Callable[[str], None] = print) -> list[str]:
    """Bring the repository up to the source: refresh classes.txt, import new complete slices
    (already imported ones are never fetched again). Returns the ids imported."""
    root = Path(root)
    source = tracked_source(root)
    if source is None:
        raise TrackError("this repository follows no source: run `tagsmith data track URI` first")
    _dvc(root, "update", CLASSES_DVC.as_posix())
    have = set(tracked_slices(root))
    new = [sid for sid in complete_slices(open_source(source)) if sid not in have]
    _import_slices(root, source, new, log)
    log(f"{len(new)} new slice(s)" + (f": {', '.join(new)}" if new else "; data is up to date"))
    return new


def _unignore_data(root: Path) -> None:
    """``dvc add data`` ignored the whole folder in git; the per-slice .dvc files inside it must be
    committed (DVC ignores each imported output itself, in data/.gitignore and data/slices/.gitignore)."""
    gi = root / ".gitignore"
    if gi.is_file():
        lines = gi.read_text().splitlines(keepends=True)
        kept = [ln for ln in lines if ln.strip() not in ("/data", "/data/", "data", "data/")]
        if kept != lines:
            gi.write_text("".join(kept))
