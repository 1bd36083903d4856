"""Tiny on-disk shards for the model tests: a bright square per class in its own quadrant."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.dataset.shards import write_index, write_split

CLASSES = ["a", "b", "c", "d"]
POLICY = {"rotation": 10.0, "translate": 0.1, "hflip": True, "vflip": False, "zoom": 0.0,
          "fill_mode": "nearest", "brightness": 0.0, "contrast": 0.0}


def images_and_labels(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8 [n,size,size,3]) and multi-hot labels (float32 [n,4])."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    y = np.zeros((n, len(CLASSES)), np.float32)
    h = size // 2
    for i in range(n):
        for c in rng.choice(len(CLASSES), size=1 + i % 2, replace=False):
            y[i, c] = 1
            r, k = divmod(int(c), 2)
            x[i, r * h + 2:(r + 1) * h - 2, k * h + 2:(k + 1) * h - 2, c % 3] = 230
    return x, y


def _jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_shards(shard_dir: Path, n_train: int = 16, n_val: int = 8, size: int = 32) -> Path:
    """Write train/val/test shards, index.json and policy.json like the augment stage."""
    splits = {}
    for split, n, seed in (("train", n_train, 1), ("val", n_val, 2), ("test", n_val, 3)):
        x, y = images_and_labels(n, size, seed)
        rows = [(f"{split}{i:03d}", _jpeg(x[i]), y[i]) for i in range(n)]
        splits[split] = {"count": n, "files": write_split(rows, shard_dir, split, 0.01)}
    write_index(shard_dir, {"image_size": size, "resize": "stretch", "jpeg_quality": 95,
                            "classes": CLASSES, "splits": splits})
    (Path(shard_dir) / "policy.json").write_text(json.dumps(POLICY, sort_keys=True, indent=2))
    return Path(shard_dir)
