"""Readers for the three label sources ingest accepts; each yields the same ``SourceRow``s.

* ``manifest``: CSV or TSV of ``filename, labels`` (optional header), labels by class index or
  by name, separated by comma, semicolon or space, plus a class-names file.
* ``coco``: a COCO instances JSON; an image's labels are the categories present in it,
  optionally mapped (several to one) onto our own classes.
* ``voc``: Pascal VOC ``Annotations/*.xml`` + ``JPEGImages/`` (+ ``ImageSets/Main/test.txt``).
* ``sliced``: ``classes.txt`` + ``slices/<id>/{labels.tsv,images/}`` (``tagsmith data add``'s
  layout): the complete slices' manifests read as one, in slice-id order.

Readers never open images and never drop a row: a row they cannot interpret carries a
``fault`` (reason + detail) so ingest can put it in quarantine with its row number.

Library only; ``python -m tasks.ingest`` uses it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tasks.common.config import IngestConfig
from tasks.common.errors import DataError


@dataclass(frozen=True)
class SourceRow:
    """One input row. ``file`` is relative to the dataset root, exactly as derived from the source
    (it may be absolute or contain ``..``: ingest rejects those). ``labels`` are class names.
    ``row`` is 1-based: the line of the manifest, the position in COCO ``images``, the sorted
    position of the VOC annotation file."""

    row: int
    file: str
    labels: tuple[str, ...] = ()
    split_hint: str | None = None  # "test" when the source itself fixes the split
    fault: str | None = None  # reason, e.g. "unknown_label", "malformed_row"
    detail: str = ""
    keep_empty: bool = False  # the source's own policy keeps it with no label (coco_unmapped)


@dataclass(frozen=True)
class Source:
    """What a reader returns: class names in index order, and every row it read."""

    classes: list[str]
    rows: list[SourceRow]


class SourceError(DataError):
    """The source as a whole is unusable (missing file, broken JSON); names the file."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None


def join_rel(*parts: str) -> str:
    """Join source path parts POSIX-style, dropping ``.`` parts but never collapsing ``..``
    (``resolve_under`` must still see an escape to reject it)."""
    keep = [p for p in parts if p not in ("", ".")]
    return posixpath.join(*keep) if keep else ""


def read_classes(path: Path) -> list[str]:
    """Read a class-names file: one name per line, blank lines ignored, names unique.

    Args:
        path: the file.

    Returns:
        Class names; position = class index.
    """
    names = [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceError(f"{path}: duplicate class name(s) {dupes}")
    return names


def split_labels(field: str) -> list[str]:
    """Split a label field on comma/semicolon when present, else on whitespace (names may hold
    spaces only in the comma/semicolon form)."""
    field = field.strip()
    if not field:
        return []
    parts = re.split(r"[;,]", field) if re.search(r"[;,]", field) else field.split()
    return [p.strip() for p in parts if p.strip()]


def _resolve_tokens(tokens: list[str], classes: list[str], fmt: str) -> tuple[tuple[str, ...], str | None]:
    """Turn tokens into class names; returns (names, unknown-token message or None)."""
    names: list[str] = []
    bad: list[str] = []
    for t in tokens:
        if fmt == "index":
            ok = t.isdigit() and int(t) < len(classes)
            (names.append(classes[int(t)]) if ok else bad.append(t))
        else:
            (names.append(t) if t in classes else bad.append(t))
    if bad:
        return (), f"unknown label(s) {bad} ({fmt}; {len(classes)} classes)"
    return tuple(sorted(set(names), key=classes.index)), None


def read_manifest(root: Path, cfg: IngestConfig, classes: list[str] | None = None) -> Source:
    """Read ``root/cfg.labels`` (CSV or TSV) and ``root/cfg.classes`` (unless ``classes`` given).

    The delimiter is a tab when the first line has one, else a comma (quote a comma-separated
    label field in CSV). A first line whose second column is ``labels`` is a header.
    """
    classes = read_classes(root / cfg.classes) if classes is None else classes
    text = _read_text(root / cfg.labels)
    first = text.splitlines()[0] if text.strip() else ""
    delim = "\t" if "\t" in first else ","
    raw = list(csv.reader(io.StringIO(text), delimiter=delim))
    lines = [(i + 1, r) for i, r in enumerate(raw) if any(c.strip() for c in r)]
    if lines and len(lines[0][1]) >= 2 and lines[0][1][1].strip().lower() in ("labels", "label", "tags"):
        lines = lines[1:]
    tokens = [split_labels(r[1]) if len(r) >= 2 else [] for _, r in lines]
    fmt = cfg.label_format
    if fmt == "auto":  # whichever reading resolves more tokens, so a few bad ones cannot flip it
        flat = [t for ts in tokens for t in ts]
        as_index = sum(t.isdigit() and int(t) < len(classes) for t in flat)
        fmt = "index" if as_index >= sum(t in classes for t in flat) else "name"
    rows: list[SourceRow] = []
    for (n, r), toks in zip(lines, tokens):
        name = r[0].strip()
        file = join_rel(cfg.images, name) if name else ""
        if len(r) != 2 or not name:
            rows.append(SourceRow(n, file or name, fault="malformed_row", detail=f"expected 2 columns, got {len(r)}"))
            continue
        labels, bad = _resolve_tokens(toks, classes, fmt)
        rows.append(SourceRow(n, file, labels, fault="unknown_label" if bad else None, detail=bad or ""))
    return Source(classes, rows)


def _optional_classes(root: Path, cfg: IngestConfig) -> list[str] | None:
    path = root / cfg.classes
    return read_classes(path) if path.is_file() else None


def _label_row(n: int, file: str, names: list[str], classes: list[str], hint: str | None = None) -> SourceRow:
    unknown = sorted({x for x in names if x not in classes})
    if unknown:
        return SourceRow(n, file, split_hint=hint, fault="unknown_label", detail=f"unknown label(s) {unknown}")
    return SourceRow(n, file, tuple(sorted(set(names), key=classes.index)), hint)


def read_coco(root: Path, cfg: IngestConfig) -> Source:
    """Read a COCO instances JSON at ``root/cfg.coco_annotations``; images under ``cfg.images``.

    Class order: the class-names file when present, else the mapping's targets (or the
    category names) in category-id order. Images with annotations but no mapped category get
    ``fault="no_mapped_category"`` unless ``coco_unmapped == "keep_empty"``.
    """
    path = root / cfg.coco_annotations
    try:
        doc = json.loads(_read_text(path))
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        images, anns = doc["images"], doc.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SourceError(f"{path}: not a COCO instances file ({type(e).__name__}: {e})") from None
    mapping = cfg.coco_mapping

    def target(cid: int) -> str | None:
        name = cats.get(cid)
        if mapping is None:
            return name
        return mapping.get(name or "", mapping.get(str(cid)))

    ordered = [target(c) for c in sorted(cats)]
    classes = _optional_classes(root, cfg) or list(dict.fromkeys(t for t in ordered if t))
    present: dict[object, list[int]] = {}
    for a in anns:
        present.setdefault(a.get("image_id"), []).append(int(a.get("category_id", -1)))
    rows: list[SourceRow] = []
    for n, img in enumerate(images, start=1):
        file = join_rel(cfg.images, str(img.get("file_name", "")))
        cids = present.get(img.get("id"), [])
        missing = sorted({c for c in cids if c not in cats})
        if missing:
            rows.append(SourceRow(n, file, fault="unknown_label", detail=f"category id(s) {missing} not in categories"))
            continue
        names = [t for t in (target(c) for c in cids) if t]
        if cids and not names and cfg.coco_unmapped == "drop":
            rows.append(SourceRow(n, file, fault="no_mapped_category", detail=f"categories {sorted({cats[c] for c in cids})} unmapped"))
            continue
        row = _label_row(n, file, names, classes)
        rows.append(row if names or not cids else SourceRow(n, file, (), keep_empty=True))
    return Source(classes, rows)


def read_voc(root: Path, cfg: IngestConfig) -> Source:
    """Read Pascal VOC under ``root/cfg.voc_root``: one row per ``Annotations/*.xml``.

    ``difficult`` objects count only with ``voc_difficult == "include"``. Ids listed in
    ``ImageSets/Main/test.txt`` get ``split_hint="test"``. Class order: the class-names file
    when present, else the sorted object names.
    """
    voc = root / cfg.voc_root
    ann_dir = voc / "Annotations"
    if not ann_dir.is_dir():
        raise SourceError(f"{ann_dir}: VOC Annotations folder not found")
    test_file = voc / "ImageSets" / "Main" / "test.txt"
    test_ids = set(_read_text(test_file).split()) if test_file.is_file() else set()
    parsed: list[tuple[int, str, list[str] | None, str]] = []
    for n, xml in enumerate(sorted(ann_dir.glob("*.xml")), start=1):
        try:
            tree = ET.parse(xml).getroot()
            fname = (tree.findtext("filename") or "").strip() or f"{xml.stem}.jpg"
            names = [
                (o.findtext("name") or "").strip()
                for o in tree.iter("object")
                if cfg.voc_difficult == "include" or (o.findtext("difficult") or "0").strip() != "1"
            ]
            parsed.append((n, fname, names, ""))
        except ET.ParseError as e:
            parsed.append((n, f"{xml.stem}.jpg", None, f"{xml.name}: {e}"))
    classes = _optional_classes(root, cfg) or sorted({x for _, _, ns, _ in parsed for x in ns or [] if x})
    rows: list[SourceRow] = []
    for n, fname, names, err in parsed:
        file = join_rel(cfg.voc_root, "JPEGImages", fname)
        hint = "test" if Path(fname).stem in test_ids else None
        if names is None:
            rows.append(SourceRow(n, file, split_hint=hint, fault="malformed_annotation", detail=err))
        else:
            rows.append(_label_row(n, file, [x for x in names if x], classes, hint))
    return Source(classes, rows)


def read_sliced(root: Path, cfg: IngestConfig) -> Source:
    """Read a sliced source: ``root/cfg.classes`` and the ``labels.tsv`` of every complete slice
    (a ``slices/<id>/`` holding ``MANIFEST.json``; one without is half-written and ignored), in
    slice-id order. Files are ``slices/<id>/images/<name>``; rows are numbered across slices in
    that order. Labels are class names (what ``tagsmith data add`` writes)."""
    classes = read_classes(root / cfg.classes)
    done = sorted(p.parent for p in (root / "slices").glob("*/MANIFEST.json"))
    if not done:
        raise SourceError(f"{root / 'slices'}: no complete slice (a slices/<id>/ folder with MANIFEST.json)")
    per_slice = cfg.model_copy(update={"images": "images", "labels": "labels.tsv", "label_format": "name"})
    rows: list[SourceRow] = []
    for folder in done:
        part = read_manifest(folder, per_slice, classes)
        offset = rows[-1].row if rows else 0
        rows += [dataclasses.replace(r, row=r.row + offset, file=join_rel("slices", folder.name, r.file)) for r in part.rows]
    return Source(classes, rows)


def read_source(root: Path, cfg: IngestConfig) -> Source:
    """Dispatch on ``cfg.source``.

    Args:
        root: the dataset root.
        cfg: the ingest section.

    Returns:
        The classes and every row read.
    """
    readers = {"manifest": read_manifest, "coco": read_coco, "voc": read_voc, "sliced": read_sliced}
    return readers[cfg.source](root, cfg)
