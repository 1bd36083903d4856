"""The split ledger: which split every image ever ingested was given, by content hash.

``data.splits.tsv`` (``ingest.splits_ledger``) is tracked by git next to ``data.dvc`` and
committed with it: a data version and the splits of its images travel together, so a fresh
clone or a fresh worker reads the same assignment. Ingest reads it (a ``dvc.yaml`` dep) and
never writes it: a stage cannot both read and write one path, and a DVC ``persist`` output
would take ingest out of DVC's run-cache (which the flow's fingerprints are). Ingest writes
the ledger extended with the images it assigned now to ``artifacts/splits/ledger.tsv``;
``tagsmith splits record`` copies it over ``data.splits.tsv``.

Runs nobody commits (a deployed nightly run following data on S3) record nothing in git, so
publish also uploads ``artifacts/splits/ledger.tsv`` into the version (``splits.tsv``) and
ingest reads the production version's too (``artifacts/production/ingest_ledger.tsv``), merged
with the git ledger by :func:`merge`.

Rows are never dropped: an image removed from the data keeps its row, so a near-duplicate of
it added later still joins its split.

    sha256<TAB>split<TAB>phash<TAB>path     (header; sorted by path, then sha256)

Library only; ``python -m tasks.ingest`` and ``tagsmith splits`` use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tasks.common.errors import DataError

HEADER = ("sha256", "split", "phash", "path")
SPLITS = ("train", "val", "test")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_PHASH = re.compile(r"^[0-9a-f]{16}$")


class LedgerError(DataError):
    """The ledger file is unreadable or inconsistent; the message names the file and line."""


@dataclass(frozen=True)
class Entry:
    """One image's recorded split. ``path`` is where it was first seen (for people reading the
    file; the identity is ``sha256``)."""

    sha256: str
    split: str
    phash: str
    path: str


def read(path: Path) -> dict[str, Entry]:
    """Read and validate a ledger.

    Args:
        path: the TSV file.

    Returns:
        Entries by sha256.

    Raises:
        LedgerError: missing file, wrong header, a malformed row or a repeated sha256.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LedgerError(f"{path}: split ledger not found (ingest.splits_ledger); create an empty one "
                          f"with `tagsmith splits init`") from None
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise LedgerError(f"{path}:1: expected the header {'<TAB>'.join(HEADER)}")
    out: dict[str, Entry] = {}
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(HEADER):
            raise LedgerError(f"{path}:{n}: expected {len(HEADER)} tab-separated columns, got {len(cols)}")
        e = Entry(*cols)
        if not _SHA.match(e.sha256) or e.split not in SPLITS or not _PHASH.match(e.phash):
            raise LedgerError(f"{path}:{n}: bad row (sha256: 64 hex digits, split: one of {SPLITS}, "
                              f"phash: 16 hex digits): {line!r}")
        if e.sha256 in out:
            raise LedgerError(f"{path}:{n}: {e.sha256[:12]}… is listed twice")
        out[e.sha256] = e
    return out


def render(entries: dict[str, Entry]) -> str:
    """The ledger's text: header, then rows sorted by path and sha256 (stable diffs)."""
    rows = sorted(entries.values(), key=lambda e: (e.path, e.sha256))
    return "".join("\t".join(r) + "\n" for r in [HEADER, *[(e.sha256, e.split, e.phash, e.path) for e in rows]])


def write(path: Path, entries: dict[str, Entry]) -> None:
    """Write ``entries`` to ``path`` (LF, UTF-8)."""
    Path(path).write_text(render(entries), encoding="utf-8", newline="\n")


def merge(git: dict[str, Entry], production: dict[str, Entry]) -> tuple[dict[str, Entry], list[str]]:
    """The recorded splits: the git ledger and the production model's ledger together.

    An image in either keeps its split. Where both list it with different splits, a train or
    val split of production's wins (the production model trained or validated on the image, so
    it must never be scored in test); otherwise the git ledger's does.

    Returns:
        (merged entries, sha256s whose split the two ledgers disagree on, sorted).
    """
    out = dict(git)
    conflicts = []
    for h, e in production.items():
        mine = out.get(h)
        if mine is None:
            out[h] = e
        elif mine.split != e.split:
            conflicts.append(h)
            if e.split in ("train", "val"):
                out[h] = Entry(h, e.split, mine.phash, mine.path)
    return out, sorted(conflicts)


def moved(old: dict[str, Entry], new: dict[str, Entry]) -> list[str]:
    """Hashes that ``old`` records and ``new`` drops or gives another split (must be none)."""
    return sorted(h for h, e in old.items() if h not in new or new[h].split != e.split)
