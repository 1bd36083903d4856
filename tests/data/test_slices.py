"""`tagsmith data add`: a new immutable slice, or a clear refusal that writes nothing.

Against a local folder and against S3 (moto's server over HTTP): every bad input is refused
with a message naming the row/file, and the source's listing is byte-for-byte unchanged.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
from PIL import Image

from flows.cli import main
from tasks.datasource.store import AlreadyExists, open_source
from tasks.datasource.slices import SliceError, add_slice, complete_slices
from tests.e2e.moto_s3 import FAKE_AWS


@pytest.fixture(scope="module")
def moto(moto_s3):
    """The session's endpoint (this module's buckets are its own), named by the environment."""
    old = {k: os.environ.get(k) for k in (*FAKE_AWS, "AWS_ENDPOINT_URL")}
    os.environ.update(FAKE_AWS, AWS_ENDPOINT_URL=moto_s3.url)
    yield moto_s3
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(params=["local", "s3"])
def source(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "source")
    server = request.getfixturevalue("moto")
    bucket = f"src-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/dataset"


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, "JPEG")
    return buf.getvalue()


def batch(root: Path, rows: dict[str, tuple[bytes, str]]) -> tuple[Path, Path]:
    """A folder of images and its labels file: name -> (bytes, labels)."""
    folder = root / "images"
    folder.mkdir(parents=True)
    for name, (data, _) in rows.items():
        (folder / name).write_bytes(data)
    labels = root / "labels.tsv"
    labels.write_text("".join(f"{n}\t{lab}\n" for n, (_, lab) in rows.items()))
    return folder, labels


def listing(uri: str) -> dict[str, bytes]:
    store = open_source(uri)
    return {k: store.get(k) for k in store.list()}


@pytest.fixture
def seeded(source, tmp_path) -> str:
    """A source holding slice s0001 (a.jpg, b.jpg) and classes cat, dog."""
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\n")
    folder, labels = batch(tmp_path / "first", {"a.jpg": (jpeg((255, 0, 0)), "cat"), "b.jpg": (jpeg((0, 255, 0)), "cat,dog")})
    add_slice(open_source(source), folder, labels, classes_file=classes)
    return source


def test_a_slice_is_written_with_its_manifest_last_and_listed(seeded, tmp_path):
    store = open_source(seeded)
    (sid, man), = complete_slices(store).items()
    assert sid == "s0001"
    assert set(man["files"]) == {"images/a.jpg", "images/b.jpg", "labels.tsv"}
    assert store.get("slices/s0001/labels.tsv") == b"a.jpg\tcat\nb.jpg\tcat,dog\n"
    assert store.get("classes.txt") == b"cat\ndog\n"
    folder, labels = batch(tmp_path / "second", {"a.jpg": (jpeg((255, 0, 0)), "cat"), "c.jpg": (jpeg((0, 0, 255)), "bird")})
    classes = tmp_path / "more.txt"
    classes.write_text("cat\ndog\nbird\n")
    report = add_slice(store, folder, labels, classes_file=classes)
    assert (report.slice, report.images, report.new_classes) == ("s0002", 1, ["bird"])
    assert report.skipped == ["a.jpg (same bytes in slice s0001)"]
    assert store.get("classes.txt") == b"cat\ndog\nbird\n"
    assert list(complete_slices(store)) == ["s0001", "s0002"]


@pytest.mark.parametrize("case", ["unknown_label", "unreadable_image", "name_clash", "missing_image", "reordered_classes"])
def test_bad_input_is_refused_naming_the_problem_and_nothing_is_written(seeded, tmp_path, case):
    good = jpeg((9, 9, 9))
    rows = {"new1.jpg": (good, "dog"), "new2.jpg": (jpeg((1, 2, 3)), "cat")}
    classes = None
    if case == "unknown_label":
        rows["new2.jpg"] = (rows["new2.jpg"][0], "cat,zebra")
        expect = ["labels.tsv:2", "zebra", "new2.jpg"]
    elif case == "unreadable_image":
        rows["new2.jpg"] = (good[: len(good) // 2], "cat")
        expect = ["new2.jpg", "truncated"]
    elif case == "name_clash":
        rows["a.jpg"] = (jpeg((0, 0, 0)), "cat")  # s0001 holds a.jpg with other bytes
        expect = ["a.jpg", "slice s0001 already holds a.jpg with other bytes"]
    elif case == "reordered_classes":
        classes = tmp_path / "classes.txt"
        classes.write_text("dog\ncat\nbird\n")
        expect = ["append-only"]
    folder, labels = batch(tmp_path / "batch", rows)
    if case == "missing_image":
        (folder / "new1.jpg").unlink()
        expect = ["labels.tsv:1", "new1.jpg has no image"]
    before = listing(seeded)
    with pytest.raises(SliceError) as err:
        add_slice(open_source(seeded), folder, labels, classes_file=classes)
    assert "nothing written" in str(err.value)
    for text in expect:
        assert text in str(err.value)
    assert listing(seeded) == before


def test_the_same_slice_id_cannot_be_created_twice(seeded, tmp_path):
    store = open_source(seeded)
    folder, labels = batch(tmp_path / "b", {"x.jpg": (jpeg((5, 5, 5)), "dog")})
    with pytest.raises(SliceError, match="slice s0001 already exists"):
        add_slice(store, folder, labels, slice_id="s0001")
    # a writer that validated before the other one wrote still cannot take the id: create-only
    with pytest.raises(AlreadyExists):
        store.create("slices/s0001/labels.tsv", b"x.jpg\tdog\n")
    assert store.get("slices/s0001/labels.tsv") == b"a.jpg\tcat\nb.jpg\tcat,dog\n"


def test_cli_reports_the_slice_and_that_no_event_was_emitted(seeded, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    folder, labels = batch(tmp_path / "b", {"x.jpg": (jpeg((5, 5, 5)), "dog")})
    assert main(["data", "add", str(folder), "--labels", str(labels), "--source", seeded, "--slice", "extra-1"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["slice"] == "extra-1"
    assert "no event emitted" in out.err
    folder, labels = batch(tmp_path / "c", {"y.jpg": (jpeg((6, 6, 6)), "horse")})
    with pytest.raises(SystemExit):
        main(["data", "add", str(folder), "--labels", str(labels), "--source", seeded])
    assert "unknown label(s) ['horse']" in capsys.readouterr().err


def test_ingest_reads_the_complete_slices_as_one_dataset_and_ignores_a_half_written_one(tmp_path):
    from tasks.common.config import IngestConfig
    from tasks.dataset.sources import read_source

    root = tmp_path / "source"
    store = open_source(str(root))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    folder, labels = batch(tmp_path / "one", {"a.jpg": (jpeg((255, 0, 0)), "cat"), "b.jpg": (jpeg((0, 255, 0)), "dog")})
    add_slice(store, folder, labels, classes_file=tmp_path / "classes.txt")
    folder, labels = batch(tmp_path / "two", {"c.jpg": (jpeg((0, 0, 255)), "cat,dog")})
    add_slice(store, folder, labels)
    store.create("slices/s0003/labels.tsv", b"d.jpg\tcat\n")  # a writer died before its manifest
    src = read_source(root, IngestConfig(source="sliced", root=str(root), test_fraction=0.0))
    assert src.classes == ["cat", "dog"]
    assert [(r.row, r.file, r.labels, r.fault) for r in src.rows] == [
        (1, "slices/s0001/images/a.jpg", ("cat",), None),
        (2, "slices/s0001/images/b.jpg", ("dog",), None),
        (3, "slices/s0002/images/c.jpg", ("cat", "dog"), None),
    ]
