"""A data source as a sequence of immutable slices, and the one way to add a slice.

Layout (``<source>`` is a local folder or ``s3://bucket/prefix``)::

    <source>/classes.txt                   one class name per line; append-only
    <source>/slices/<id>/labels.tsv        name<TAB>label,label   (names, never indices)
    <source>/slices/<id>/images/<name>
    <source>/slices/<id>/MANIFEST.json     written last: the slice is complete once it exists

A slice is never changed after its manifest exists, so a copy of it (a DVC import, a cache of
per-image results) never goes stale; new data is a new slice. ``add_slice`` validates everything
before writing anything (unknown labels, undecodable images, label rows without an image, a name
an earlier slice holds with other bytes), then writes ``labels.tsv`` first as a create-only
object (it claims the slice id: a second writer of the same id fails before writing), the images,
and the manifest last. Readers (ingest's ``sliced`` source, ``tagsmith data track``) only use
slices that have a manifest, so a writer that dies half-way leaves nothing anyone reads.

Library only; ``tagsmith data add`` uses it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks.common.errors import DataError
from tasks.common.files import json_text, sha256_bytes
from tasks.datasource.store import SliceStore
from tasks.dataset.sources import split_labels

MANIFEST = "MANIFEST.json"
CLASSES = "classes.txt"
SLICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_LISTED = 20  # problems named in one error; the count says how many more


class SliceError(DataError):
    """The new slice was refused; nothing was written to the source. Names every problem."""


@dataclass
class SliceReport:
    """What ``add_slice`` wrote (or would write, with ``dry_run``)."""

    source: str
    slice: str
    images: int
    bytes: int
    new_classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in an earlier slice, same bytes


def read_classes_text(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def complete_slices(store: SliceStore) -> dict[str, dict]:
    """Every complete slice of the source: id -> its manifest, in id order."""
    ids = sorted({k.split("/")[1] for k in store.list("slices") if k.count("/") >= 2 and k.endswith("/" + MANIFEST)})
    out = {}
    for sid in ids:
        raw = store.get(f"slices/{sid}/{MANIFEST}")
        if raw is not None:
            out[sid] = json.loads(raw)
    return out


def _all_slice_ids(store: SliceStore) -> set[str]:
    return {k.split("/")[1] for k in store.list("slices") if k.count("/") >= 2}


def next_slice_id(existing: set[str]) -> str:
    """``s0001``, ``s0002``...: one past the highest numbered id, complete or not (a half-written
    slice keeps its id, so a retry never collides with it)."""
    nums = [int(m.group(1)) for s in existing if (m := re.fullmatch(r"s(\d+)", s))]
    return f"s{max(nums, default=0) + 1:04d}"


def _read_labels(path: Path) -> list[tuple[int, str, list[str] | None]]:
    """Rows of a ``name<TAB or ,>labels`` file: (line, name, label names or None when the row
    does not have two columns); header skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise SliceError(f"{path}: cannot read the labels file ({e.strerror or e})") from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    rows = []
    for n, r in enumerate(csv.reader(io.StringIO(text), delimiter="\t" if "\t" in first else ","), start=1):
        if not any(c.strip() for c in r):
            continue
        if not rows and len(r) >= 2 and r[1].strip().lower() in ("labels", "label", "tags"):
            continue
        rows.append((n, r[0].strip() if r else "", split_labels(r[1]) if len(r) == 2 else None))
    return rows


def _classes_after(store: SliceStore, classes_file: Path | None) -> tuple[list[str], list[str], list[str]]:
    """(classes after this slice, new ones, problems). A given classes file must extend the
    source's: existing names stay at their index, new names only at the end."""
    raw = store.get(CLASSES)
    current = read_classes_text(raw.decode("utf-8-sig")) if raw is not None else []
    if classes_file is None:
        return current, [], [] if current else [f"{store.uri(CLASSES)} does not exist: pass --classes FILE"]
    wanted = read_classes_text(Path(classes_file).read_text(encoding="utf-8-sig"))
    problems = []
    if wanted[: len(current)] != current:
        problems.append(f"{classes_file}: must start with the source's {len(current)} classes in the same "
                        f"order (classes are append-only: new ones go at the end)")
    dupes = sorted({c for c in wanted if wanted.count(c) > 1})
    bad = [c for c in wanted if re.search(r"[,;\t]", c)]
    problems += [f"{classes_file}: duplicate class name(s) {dupes}"] if dupes else []
    problems += [f"{classes_file}: class names cannot hold , ; or tab: {bad}"] if bad else []
    return wanted, wanted[len(current):], problems


def plan_slice(store: SliceStore, folder: Path, labels: Path, slice_id: str | None = None,
               classes_file: Path | None = None) -> tuple[SliceReport, dict[str, bytes], list[str]]:
    """Validate a new slice without writing: (report, objects to write keyed under the slice,
    classes after it). Raises ``SliceError`` naming every problem found."""
    # imported here: the flow's data-version check imports this module on every run and needs
    # no numpy or Pillow (a fifth of a second of a cached re-run)
    from tasks.dataset.imageio import ImageFault, open_rgb

    folder = Path(folder)
    classes, new_classes, problems = _classes_after(store, classes_file)
    existing_ids = _all_slice_ids(store)
    sid = slice_id or next_slice_id(existing_ids)
    if not SLICE_ID.match(sid):
        problems.append(f"slice id {sid!r}: use letters, digits, . _ - (at most 64)")
    elif sid in existing_ids:
        problems.append(f"slice {sid} already exists in {store.uri('slices')} (slices are immutable; pick a new id)")
    known: dict[str, tuple[str, str]] = {}  # image name -> (slice, sha256)
    for other, man in complete_slices(store).items():
        for key, meta in man.get("files", {}).items():
            if key.startswith("images/"):
                known[key.removeprefix("images/")] = (other, meta["sha256"])
    rows = _read_labels(Path(labels))
    on_disk = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")} if folder.is_dir() else set()
    if not folder.is_dir():
        problems.append(f"{folder}: not a folder")
    objects: dict[str, bytes] = {}
    lines: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for n, name, names in rows:
        where = f"{labels}:{n}"
        if names is None:
            problems.append(f"{where}: expected 2 columns (name, labels)")
            continue
        if not name or "/" in name or "\\" in name or name.startswith("."):
            problems.append(f"{where}: {name!r} is not a plain file name")
            continue
        if name in seen:
            problems.append(f"{where}: {name} listed twice")
            continue
        seen.add(name)
        unknown = [x for x in names if x not in classes]
        if unknown:
            problems.append(f"{where}: unknown label(s) {unknown} for {name} (classes: {len(classes)} in classes.txt)")
        if name not in on_disk:
            problems.append(f"{where}: {name} has no image in {folder}")
            continue
        path = folder / name
        try:
            open_rgb(path)
        except ImageFault as e:
            problems.append(f"{path}: {e.reason}: {e.message.replace(str(path), name)}")
            continue
        data = path.read_bytes()
        if name in known:
            other, sha = known[name]
            if sha != sha256_bytes(data):
                problems.append(f"{path}: slice {other} already holds {name} with other bytes "
                                f"(rename the new image; a slice is never rewritten)")
            else:
                skipped.append(f"{name} (same bytes in slice {other})")
            continue
        objects[f"images/{name}"] = data
        lines.append(f"{name}\t{','.join(names)}\n")
    unlabelled = sorted(on_disk - seen)
    if unlabelled:
        problems.append(f"{folder}: {len(unlabelled)} image(s) without a row in {labels}: {unlabelled[:5]}")
    if not problems and not objects:
        problems.append(f"{folder}: nothing new to add (every image is already in the source)")
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise SliceError(f"slice refused, nothing written to {store.uri()}:\n  "
                         + "\n  ".join(problems[:MAX_LISTED]) + more)
    objects["labels.tsv"] = "".join(lines).encode()
    report = SliceReport(store.uri(), sid, len(objects) - 1, sum(map(len, objects.values())), new_classes, skipped)
    return report, objects, classes


def add_slice(store: SliceStore, folder: Path, labels: Path, slice_id: str | None = None,
              classes_file: Path | None = None, dry_run: bool = False) -> SliceReport:
    """Append ``folder``'s images and ``labels`` to the source as a new complete slice.

    Args:
        store: the source.
        folder: the new images (flat folder; every image needs a row, every row an image).
        labels: ``name<TAB>labels`` (or CSV), labels by class name separated by , ; or space.
        slice_id: default ``s<NNNN>``, one past the highest existing number.
        classes_file: the full class list when the slice brings new classes (must extend the
            source's classes.txt); required for the first slice.
        dry_run: validate and report only.

    Returns:
        What was written.

    Raises:
        SliceError: bad input; nothing was written.
        AlreadyExists: another writer created this slice first.
    """
    report, objects, classes = plan_slice(store, folder, labels, slice_id, classes_file)
    if dry_run:
        return report
    base = f"slices/{report.slice}"
    store.create(f"{base}/labels.tsv", objects["labels.tsv"])  # claims the id before anything else
    for key, data in objects.items():
        if key != "labels.tsv":
            store.create(f"{base}/{key}", data)
    if report.new_classes:
        raw = store.get(CLASSES)
        now = read_classes_text(raw.decode("utf-8-sig")) if raw is not None else []
        if classes[: len(now)] != now:  # another writer appended classes since validation
            raise SliceError(f"{store.uri(CLASSES)} changed while adding slice {report.slice}; "
                             f"the slice is incomplete (no manifest) and ignored: add it again with a new id")
        store.replace(CLASSES, "".join(c + "\n" for c in classes).encode())
    manifest = {
        "slice": report.slice,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": len(classes),
        "files": {k: {"size": len(v), "sha256": sha256_bytes(v)} for k, v in sorted(objects.items())},
        "skipped": report.skipped,
    }
    store.create(f"{base}/{MANIFEST}", json_text(manifest).encode())  # last: the slice is complete
    return report
