"""Score a shard split with a model: the one place evaluate and publish (the gate) predict and
round, so both compute their metrics on exactly the same inputs the same way.

Library only; no command line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tasks.common.config import EvaluateConfig
from tasks.common.files import read_json, sha256_file
from tasks.dataset import shards
from tasks.evaluation import metrics

DIGITS = 6  # rounding of every score and number written; float noise below it is not a change
# for a class without a tuned threshold (and a model without thresholds.json): evaluate's default
DEFAULT_THRESHOLD = EvaluateConfig.model_fields["default_threshold"].default


def index_sha256(shard_dir: Path) -> str:
    """sha256 of the shards' index.json: the data version a model was evaluated on."""
    return sha256_file(Path(shard_dir) / "index.json")


def split_count(shard_dir: Path, split: str) -> int:
    """Number of examples the shard index lists for ``split`` (0 when absent)."""
    return int(shards.read_index(Path(shard_dir)).get("splits", {}).get(split, {}).get("count", 0))


def score_split(
    model, shard_dir: Path, split: str, batch_size: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Run ``model`` over one split of the shards in file order (no augmentation).

    Args:
        model: a Keras model mapping RGB 0..255 [B,S,S,3] to sigmoid scores [B,N].
        shard_dir: the augment stage's output (artifacts/shards).
        split: "train", "val" or "test".
        batch_size: inference batch size.
    Returns:
        (ids, labels [n, N] int multi-hot, scores [n, N] float32), in shard order;
        empty arrays when the split has no example.
    """
    n_classes = len(shards.read_index(Path(shard_dir))["classes"])
    if split_count(shard_dir, split) == 0:
        return [], np.zeros((0, n_classes), np.int64), np.zeros((0, n_classes), np.float32)
    ds = shards.make_dataset(Path(shard_dir), split, batch_size, shuffle=False, seed=0, with_ids=True)
    ids: list[str] = []
    labels, scores = [], []
    for images, y, batch_ids in ds:
        # training=False: the in-model augmentation is the identity at inference.
        scores.append(np.asarray(model(images, training=False), dtype=np.float32))
        labels.append(np.asarray(y))
        ids.extend(b.decode() if isinstance(b, bytes) else str(b) for b in np.asarray(batch_ids))
    return ids, (np.concatenate(labels) > 0.5).astype(np.int64), np.concatenate(scores)


def rounded_scores(model, shard_dir: Path, split: str, batch_size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``score_split`` with the scores rounded to ``DIGITS``, as predictions.csv holds them:
    every metric is computed from these, so anyone can recompute it from the file."""
    ids, y, s = score_split(model, shard_dir, split, batch_size)
    return ids, y, s.round(DIGITS)


def round_metrics(values: dict[str, float | int]) -> dict[str, float | int | None]:
    """Metrics as metrics.json holds them: sorted, ints kept, floats rounded, NaN as null."""
    return {k: (v if isinstance(v, int) else None if math.isnan(v) else round(float(v), DIGITS))
            for k, v in sorted(values.items())}


def read_thresholds(model_dir: Path, n_classes: int) -> list[float]:
    """A model's per-class thresholds (thresholds.json), else ``DEFAULT_THRESHOLD`` for each."""
    path = Path(model_dir) / "thresholds.json"
    if not path.is_file():
        return [DEFAULT_THRESHOLD] * n_classes
    return list(read_json(path)["thresholds"])


def split_metrics(model, shard_dir: Path, split: str, batch_size: int, thresholds) -> dict[str, float | int | None]:
    """A model's headline metrics on one split, rounded as metrics.json holds them (the publish
    gate recomputes production's test numbers with this)."""
    _, y, s = rounded_scores(model, shard_dir, split, batch_size)
    return round_metrics(metrics.summary_metrics(y, s, thresholds))
