"""Every fault of a corrupt-input corpus is quarantined with its row, file and reason."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.ingest import IngestError, run
from tests.data import corpus


def _jpeg(seed: int, size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# (name in the manifest, label field, file bytes | None, expected reason)
FAULTS = [
    ("missing.jpg", "0", None, "missing"),
    ("zero.jpg", "0", b"", "zero_byte"),
    ("truncated.jpg", "0", _jpeg(1, (64, 64))[:400], "truncated"),
    ("garbled.jpg", "0", b"\xff\xd8\xff\xe0" + bytes(300), "undecodable"),
    ("text.jpg", "0", b"just some text, not pixels\n", "not_an_image"),
    ("page.png", "0", b"<html><body>404</body></html>", "not_an_image"),
    ("bomb.png", "0", _png(Image.new("1", (200, 200))), "decompression_bomb"),
    ("sliver.png", "0", _png(Image.new("L", (1, 400))), "absurd_dimensions"),
    ("bad_index.jpg", "0,9", _jpeg(2), "unknown_label"),
    ("bad_token.jpg", "0,x", _jpeg(3), "unknown_label"),
    ("empty.jpg", "", _jpeg(4), "empty_labels"),
    ("0001.jpg", "1", None, "duplicate_row"),  # already listed by the clean part
    ("copy.jpg", "1", "COPY", "duplicate_image"),  # same bytes as 0000.jpg
    ("/etc/hostname", "0", None, "path_escapes_root"),
    ("../outside.jpg", "0", None, "path_escapes_root"),
    ("link.jpg", "0", "LINK", "path_escapes_root"),  # symlink to a file outside the root
    ("folder.jpg", "0", "DIR", "not_a_file"),
]


@pytest.fixture(scope="module")
def quarantine(tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    tmp = tmp_path_factory.mktemp("faults")
    root, images = tmp / "root", tmp / "root" / "JPEGImages"
    rows = corpus.items(30)
    corpus.write_images(images, [f for f, _ in rows])
    (tmp / "outside.jpg").write_bytes(_jpeg(5))
    extra = "malformed.jpg\t0\tsurplus column\n"
    for name, labels, data, _ in FAULTS:
        extra += f"{name}\t{labels}\n"
        if data == "COPY":
            (images / name).write_bytes((images / "0000.jpg").read_bytes())
        elif data == "LINK":
            os.symlink(tmp / "outside.jpg", images / name)
        elif data == "DIR":
            (images / name).mkdir()
        elif data is not None:
            (images / name).write_bytes(data)
    corpus.write_manifest(root, rows)
    with open(root / "labels.tsv", "a") as f:
        f.write(extra)
    out = tmp / "out"
    summary = run(corpus.cfg(root, max_pixels=30_000, max_side=300, max_quarantine_share=1.0), out)
    with open(out / "quarantine.csv", newline="") as f:
        by_file: dict[str, list[dict]] = {}
        for r in csv.DictReader(f):
            by_file.setdefault(r["file"], []).append(r)
    return out, by_file, summary


@pytest.mark.parametrize("name,reason", [(n, r) for n, _, _, r in FAULTS], ids=[n for n, *_ in FAULTS])
def test_fault_is_quarantined_with_its_reason(quarantine, name, reason):
    _, by_file, _ = quarantine
    file = name if name.startswith("/") else f"JPEGImages/{name}"
    assert [r["reason"] for r in by_file[file]] == [reason]


def test_row_with_extra_columns_is_malformed(quarantine):
    assert by_reason(quarantine, "malformed_row") == ["JPEGImages/malformed.jpg"]


def by_reason(q, reason: str) -> list[str]:
    return [r["file"] for rs in q[1].values() for r in rs if r["reason"] == reason]


def test_rows_are_numbered_by_manifest_line(quarantine):
    _, by_file, _ = quarantine
    assert by_file["JPEGImages/missing.jpg"][0]["row"] == str(1 + 30 + 1 + 1)  # header, 30 rows, malformed


def test_every_row_is_accounted_for(quarantine):
    _, by_file, summary = quarantine
    assert summary.rows_read == 30 + 1 + len(FAULTS)
    assert summary.kept == 30 and summary.quarantined == 1 + len(FAULTS) == sum(map(len, by_file.values()))


def test_duplicate_content_is_kept_once_under_the_first_name(quarantine):
    out, _, _ = quarantine
    manifest = (out / "manifest.csv").read_text()
    assert "JPEGImages/0000.jpg" in manifest and "copy.jpg" not in manifest


def test_quarantine_details_hold_no_absolute_paths(quarantine):
    out, _, _ = quarantine
    assert str(out.parent) not in (out / "quarantine.csv").read_text()


def test_too_much_quarantine_fails_the_run_naming_what_to_look_at(tmp_path):
    rows = corpus.all_formats(tmp_path, n=20)
    for f, _ in rows[:2]:
        (tmp_path / "JPEGImages" / f).write_bytes(b"")
    with pytest.raises(IngestError, match=r"quarantine\.csv.*zero_byte: 2"):
        run(corpus.cfg(tmp_path), tmp_path / "out")
    assert (tmp_path / "out" / "quarantine.csv").read_text().count("zero_byte") == 2
