"""The synthetic dataset generator: byte-determinism, label contract, long tail, slices."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tasks.demo.synth import PRESETS, generate
from tasks.demo.shapes import CLASSES


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _labels(root: Path) -> dict[str, list[int]]:
    lines = (root / "labels.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "filename\tlabels"
    return {f: [int(i) for i in lab.split(",")] for f, lab in (ln.split("\t") for ln in lines[1:])}


def test_same_arguments_give_byte_identical_files_for_any_worker_count(tmp_path: Path) -> None:
    generate(tmp_path / "a", preset="tiny", count=24, workers=1)
    generate(tmp_path / "b", preset="tiny", count=24, workers=1)
    generate(tmp_path / "c", preset="tiny", count=24, workers=2)
    a = _files(tmp_path / "a")
    assert len(a) == 24 + 3
    assert a == _files(tmp_path / "b") == _files(tmp_path / "c")


def test_another_seed_gives_other_images(tmp_path: Path) -> None:
    generate(tmp_path / "a", preset="tiny", count=4, seed=0)
    generate(tmp_path / "b", preset="tiny", count=4, seed=1)
    assert _files(tmp_path / "a")["images/000000.jpg"] != _files(tmp_path / "b")["images/000000.jpg"]


def test_tiny_preset_writes_the_study_format(tmp_path: Path) -> None:
    summary = generate(tmp_path, preset="tiny")
    labels = _labels(tmp_path)
    assert (tmp_path / "classes.txt").read_text().splitlines() == CLASSES
    assert len(CLASSES) == len(set(CLASSES)) == 20
    assert len(labels) == summary["images"] == 80
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(labels)
    for name, lab in labels.items():
        assert 1 <= len(lab) <= 4 and lab == sorted(set(lab)), name
        assert all(0 <= i < 20 for i in lab), name
        with Image.open(tmp_path / "images" / name) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (48, 48)
    test = (tmp_path / "test.txt").read_text().splitlines()
    assert test == sorted(test) and set(test) <= set(labels) and len(test) == 20
    assert summary["train"] + summary["test"] == 80


def test_study_preset_reproduces_the_papers_split_sizes() -> None:
    count, size, share = PRESETS["study"]
    assert (count, size, round(share * count)) == (47441, 256, 15516)


def test_class_frequencies_are_long_tailed(tmp_path: Path) -> None:
    freq = generate(tmp_path, preset="tiny", count=400, size=24)["class_images"]
    counts = sorted(freq.values(), reverse=True)
    assert counts[-1] >= 4  # every class is present ...
    assert counts[0] >= 8 * counts[-1]  # ... but the head dwarfs the tail
    assert counts[0] > 2 * counts[5]


def test_v2_keeps_v1_files_and_adds_images_with_shifted_balance(tmp_path: Path) -> None:
    v1 = generate(tmp_path / "v1", preset="tiny", count=200, size=24)
    v2 = generate(tmp_path / "v2", preset="tiny", slice="v2", count=200, size=24)
    old, new = _files(tmp_path / "v1"), _files(tmp_path / "v2")
    assert all(new[k] == v for k, v in old.items() if k.startswith("images/"))
    assert len([k for k in new if k.startswith("images/")]) == v2["images"] == 300
    labels = _labels(tmp_path / "v2")
    assert {k: v for k, v in labels.items() if k < "000200.jpg"} == _labels(tmp_path / "v1")
    old_test = set((tmp_path / "v1" / "test.txt").read_text().splitlines())
    assert old_test < set((tmp_path / "v2" / "test.txt").read_text().splitlines())
    # The head class of v1 is rarer among v2's new images than the tail class of v1.
    head = max(v1["class_images"], key=v1["class_images"].get)
    tail = min(v1["class_images"], key=v1["class_images"].get)
    fresh = [lab for name, lab in labels.items() if name >= "000200.jpg"]
    n_head = sum(CLASSES.index(head) in lab for lab in fresh)
    n_tail = sum(CLASSES.index(tail) in lab for lab in fresh)
    assert n_tail > 2 * n_head


def test_rerun_removes_images_it_no_longer_writes(tmp_path: Path) -> None:
    generate(tmp_path, preset="tiny", count=12)
    (tmp_path / ".gitignore").write_text("")
    generate(tmp_path, preset="tiny", count=5)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f"{i:06d}.jpg" for i in range(5)]
    assert len(_labels(tmp_path)) == 5


@pytest.mark.parametrize("foreign", ["notes.txt", "images/photo.png"])
def test_refuses_to_write_into_a_folder_with_foreign_files(tmp_path: Path, foreign: str) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / foreign).write_text("mine")
    with pytest.raises(ValueError, match=foreign.replace(".", r"\.")):
        generate(tmp_path, preset="tiny", count=3)
    assert (tmp_path / foreign).read_text() == "mine"
