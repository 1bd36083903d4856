"""Tiny, fully deterministic fixtures for the evaluate/publish/predict tests.

Images: low noise with a bright square in the quadrant of each label (class c = quadrant
row*2+col), saved as PNG files. Shards are made from those files the way augment does
(open_rgb -> resize stretch -> JPEG q95). Models are hand-set, not trained: "good" reads the
quadrant brightness (perfect ranking), "bad" is the same with the sign flipped.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from PIL import Image

from tasks.dataset.preprocess import Preprocess, encode
from tasks.dataset.shards import write_index, write_split
from tasks.model.build import save_model

CLASSES = ["a", "b", "c", "d"]
SIZE = 32
RAW = 48


def make_images(folder: Path, n: int, seed: int) -> list[tuple[Path, np.ndarray]]:
    """Write ``n`` PNG images; returns (path, multi-hot labels) pairs in name order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out, h = [], RAW // 2
    for i in range(n):
        x = rng.integers(0, 60, (RAW, RAW, 3)).astype(np.uint8)
        y = np.zeros(len(CLASSES), np.float32)
        for c in rng.choice(len(CLASSES), size=1 + i % 2, replace=False):
            y[c] = 1
            r, k = divmod(int(c), 2)
            x[r * h + 3:(r + 1) * h - 3, k * h + 3:(k + 1) * h - 3] = 230
        path = folder / f"img{i:03d}.png"
        Image.fromarray(x).save(path)
        out.append((path, y))
    return out


SPEC = Preprocess(SIZE, "stretch", 95)


def shard_example(path: Path) -> bytes:
    """What augment stores for one image (the predict stage must reproduce it)."""
    return encode(path, SPEC)


def make_shards(root: Path, n_val: int = 10, n_test: int = 12) -> Path:
    """Raw images under root/raw/<split>/ and shards under root/shards/."""
    shard_dir = root / "shards"
    splits = {}
    for split, n, seed in (("train", 4, 1), ("val", n_val, 2), ("test", n_test, 3)):
        items = make_images(root / "raw" / split, n, seed)
        rows = [(p.stem, shard_example(p), y) for p, y in items]
        splits[split] = {"count": n, "files": write_split(rows, shard_dir, split, 0.01)}
    write_index(shard_dir, {"image_size": SIZE, "resize": "stretch", "jpeg_quality": 95,
                            "classes": CLASSES, "splits": splits})
    return shard_dir


def make_model(model_dir: Path, sign: float = 1.0, lose_class: int | None = None) -> Path:
    """A hand-set model: quadrant mean brightness -> sigmoid score per class.

    ``lose_class``: that one class is scored backwards (the others as ``sign`` says).
    """
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.AveragePooling2D(SIZE // 2, name="pool")(inp)  # [B,2,2,3]: one cell per class
    x = keras.layers.Reshape((4, 3))(x)
    x = keras.layers.Dense(1, name="head")(x)
    x = keras.layers.Reshape((4,))(x)
    if lose_class is not None:
        flip = keras.layers.Dense(4, use_bias=False, name="flip")
        x = flip(x)
        flip.set_weights([np.diag([-1.0 if k == lose_class else 1.0 for k in range(4)]).astype(np.float32)])
    out = keras.layers.Activation("sigmoid")(x)
    model = keras.Model(inp, out)
    model.get_layer("head").set_weights([np.full((3, 1), sign * 0.1 / 3, np.float32),
                                         np.array([-sign * 8.6], np.float32)])
    params = {"sign": sign} if lose_class is None else {"sign": sign, "lose_class": lose_class}
    meta = {"classes": CLASSES, "image_size": SIZE, "input": "RGB 0..255", "backbone": "handset",
            "weights": "none", "phase": "full", "params": params, "preprocessing": "none",
            "preprocess": SPEC.as_dict()}
    save_model(model, model_dir, meta)
    return model_dir
