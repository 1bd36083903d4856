"""Tiny on-disk datasets for the ingest tests, the same images and labels in every source format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.common.config import IngestConfig

CLASSES = ["cat", "dog", "bird", "fish", "frog", "rare"]
# COCO ids are not contiguous; "kitten" maps onto "cat" (several to one).
COCO_IDS = {"cat": 3, "dog": 7, "bird": 8, "fish": 20, "frog": 21, "rare": 90}


def items(n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """``n`` (filename, sorted class indices): 1-3 common labels, ``rare`` on 4 images."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        labels = sorted(rng.choice(5, size=1 + i % 3, replace=False).tolist())
        if i % (n // 4) == 1:
            labels.append(5)
        out.append((f"{i:04d}.jpg", labels))
    return out


def write_images(folder: Path, names: list[str], size: int = 32, seed: int = 0) -> None:
    """Distinct noise JPEGs (distinct bytes) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name, quality=90)


def write_manifest(root: Path, rows: list[tuple[str, list[int]]], *, by: str = "index", sep: str = "\t",
                   label_sep: str = ",", name: str = "labels.tsv") -> None:
    """A manifest (plus classes.txt), labels by ``index`` or ``name``."""
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    fmt = (lambda ls: label_sep.join(str(i) for i in ls)) if by == "index" else (
        lambda ls: label_sep.join(CLASSES[i] for i in ls))
    quote = '"' if sep == "," and label_sep == "," else ""
    body = "".join(f"{f}{sep}{quote}{fmt(ls)}{quote}\n" for f, ls in rows)
    (root / name).write_text(f"filename{sep}labels\n" + body)


def write_coco(root: Path, rows: list[tuple[str, list[int]]], path: str = "annotations/instances.json") -> None:
    """A COCO instances file; each label becomes 1-2 boxes, class 0 sometimes as "kitten" (id 4)."""
    cats = [{"id": i, "name": n} for n, i in COCO_IDS.items()] + [{"id": 4, "name": "kitten"}]
    images, anns = [], []
    for k, (f, ls) in enumerate(reversed(rows)):  # order must not matter
        images.append({"id": 1000 + k, "file_name": f, "width": 32, "height": 32})
        for j in ls:
            cid = 4 if (j == 0 and k % 2) else COCO_IDS[CLASSES[j]]
            for _ in range(1 + k % 2):
                anns.append({"id": len(anns) + 1, "image_id": 1000 + k, "category_id": cid, "bbox": [0, 0, 5, 5]})
    out = root / path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def coco_mapping() -> dict[str, str]:
    return {**{c: c for c in CLASSES}, "kitten": "cat"}


def write_voc(root: Path, rows: list[tuple[str, list[int]]], test: list[str] = ()) -> None:
    """Pascal VOC Annotations (+ a difficult extra "dog" on every 5th image) and ImageSets."""
    ann = root / "Annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for k, (f, ls) in enumerate(rows):
        objs = "".join(f"<object><name>{CLASSES[j]}</name><difficult>0</difficult></object>" for j in ls)
        if k % 5 == 0 and 1 not in ls:
            objs += "<object><name>dog</name><difficult>1</difficult></object>"
        (ann / f"{Path(f).stem}.xml").write_text(f"<annotation><filename>{f}</filename>{objs}</annotation>")
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "test.txt").write_text("".join(Path(f).stem + "\n" for f in test))


def cfg(root: Path, **kw) -> IngestConfig:
    """An ingest config for ``root`` with test-sized limits."""
    base = dict(root=str(root), images="JPEGImages", voc_root=".", workers=1)
    return IngestConfig.model_validate({**base, **kw})


def all_formats(root: Path, n: int = 40, test_every: int = 0) -> list[tuple[str, list[int]]]:
    """Write one corpus as manifest, COCO and VOC side by side; optional user test split."""
    rows = items(n)
    write_images(root / "JPEGImages", [f for f, _ in rows])
    write_manifest(root, rows)
    write_coco(root, rows)
    test = [f for i, (f, _) in enumerate(rows) if test_every and i % test_every == 0]
    write_voc(root, rows, test)
    (root / "test.txt").write_text("".join(f + "\n" for f in test))
    return rows
