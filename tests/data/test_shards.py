"""Stage augment on a tiny fabricated dataset: shards, index.json, policy.json, preview.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.augment import run
from tasks.common.config import AugmentConfig
from tasks.dataset.shards import make_dataset, read_index

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """12 small images (one broken), a manifest and classes.json, as ingest would write them."""
    root, out = tmp_path / "data", tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    out.mkdir()
    rows = ["id,path,sha256,labels,split"]
    for i in range(12):
        img = np.zeros((24 + i, 40, 3), np.uint8)
        img[4:16, 8 + i:20 + i] = (255, 40 * (i % 6), 0)
        Image.fromarray(img).save(root / "images" / f"{i:03d}.jpg", quality=95)
        split = "train" if i < 8 else ("val" if i < 10 else "test")
        rows.append(f"{i:03d},images/{i:03d}.jpg,x,{CLASSES[i % 3]};{CLASSES[(i + 1) % 3]},{split}")
    (root / "images" / "003.jpg").write_bytes(b"\xff\xd8\xff broken")
    (out / "manifest.csv").write_text("\n".join(rows) + "\n")
    (out / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    return root, out


def stage(dataset, out: Path, workers: int = 1):
    cfg = AugmentConfig(image_size=32, shard_mb=1, workers=workers, preview_images=3, preview_draws=2)
    return run(cfg, data_root=dataset[0], dataset_dir=dataset[1], out_dir=out)


def test_stage_writes_index_policy_preview_and_skips_the_broken_image(dataset, tmp_path: Path):
    summary = stage(dataset, tmp_path / "shards")
    index = read_index(tmp_path / "shards")
    assert index["image_size"] == 32 and index["classes"] == CLASSES
    assert {s: index["splits"][s]["count"] for s in ("train", "val", "test")} == {"train": 7, "val": 2, "test": 2}
    assert [s["id"] for s in index["skipped"]] == ["003"] and "images/003.jpg" == index["skipped"][0]["path"]
    assert summary.counts == {"train": 7, "val": 2, "test": 2}
    policy = json.loads((tmp_path / "shards" / "policy.json").read_text())
    assert set(policy) == {"rotation", "translate", "zoom", "hflip", "vflip", "fill_mode", "brightness", "contrast"}
    assert Image.open(tmp_path / "shards" / "preview.png").format == "PNG"
    assert str(tmp_path) not in (tmp_path / "shards" / "index.json").read_text()  # no absolute paths
    images, labels, ids = next(make_dataset(tmp_path / "shards", "val", 8, shuffle=False, seed=0, with_ids=True)
                               .as_numpy_iterator())
    assert images.shape == (2, 32, 32, 3) and [i.decode() for i in ids] == ["008", "009"]
    np.testing.assert_array_equal(labels, [[1, 0, 1], [1, 1, 0]])  # 008: triangle;circle


def test_stage_output_is_byte_identical_across_runs_and_worker_counts(dataset, tmp_path: Path):
    stage(dataset, tmp_path / "a", workers=1)
    stage(dataset, tmp_path / "b", workers=2)
    a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert a == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"index.json", "policy.json", "preview.png"} <= set(a)
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_unknown_class_or_split_is_skipped_with_its_reason_and_the_rest_goes_on(dataset, tmp_path: Path):
    manifest = dataset[1] / "manifest.csv"
    manifest.write_text(manifest.read_text() + "012,images/000.jpg,x,hexagon,train\n013,images/001.jpg,x,circle,holdout\n")
    summary = stage(dataset, tmp_path / "shards")
    reasons = {s["id"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {"003", "012", "013"}
    assert "hexagon" in reasons["012"] and "holdout" in reasons["013"]
    assert summary.counts == {"train": 7, "val": 2, "test": 2}
