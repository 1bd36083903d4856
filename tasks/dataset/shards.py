"""TFRecord shards: the one on-disk format between ``augment`` and the stages that train on it.

Each record is a ``tf.train.Example`` with ``image`` (JPEG bytes, already resized to the
index's ``image_size``), ``labels`` (multi-hot float list, one entry per class in
``index.json`` order) and ``id`` (the manifest id). Shards are named
``{split}-{i:05d}-of-{n:05d}.tfrecord``; ``index.json`` beside them lists the basenames, so
nothing depends on where the folder lives.

Library only; ``python -m tasks.augment`` writes the shards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

from tasks.common.files import write_json
from tasks.dataset.preprocess import decode

INDEX_FILE = "index.json"
MB = 1_000_000  # shard_mb is in decimal megabytes
DEFAULT_SHUFFLE_BUFFER = 2048  # records (JPEG bytes, ~10-30 kB at 256 px): a few tens of MB


def _example(id_: str, jpeg: bytes, labels: np.ndarray) -> bytes:
    """Serialize one record; ``deterministic=True`` fixes the order of the feature map."""
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        "labels": tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(labels, np.float32).ravel())),
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[id_.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_split(
    examples: Iterable[tuple[str, bytes, np.ndarray]], out_dir: Path, split: str, shard_mb: float,
    name: str | None = None,
) -> list[str]:
    """Stream ``examples`` into shards of roughly ``shard_mb`` MB each, in the order given.

    The shard count is only known at the end, so shards are written under temporary names
    and renamed once the stream is exhausted; earlier ``{split}-*.tfrecord`` files in
    ``out_dir`` are removed first so a rerun never leaves stale shards behind.

    Args:
        examples: ``(id, jpeg_bytes, multi_hot_labels)`` tuples; consumed lazily.
        out_dir: the shard folder (created if missing).
        split: split name, the file-name prefix (``train``, ``val``, ``test``).
        shard_mb: target shard size in MB (10**6 bytes); a shard is closed before a record
            would push it past this, and holds at least one record. Fractions are allowed.
        name: the file-name prefix when several groups of one split are written (augment: the
            split and the slice, ``train-s0002``); default ``split``. Only this prefix's earlier
            shards are removed.

    Returns:
        The shard basenames in order (empty when there were no examples).
    """
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or split
    own = re.compile(rf"^{re.escape(name)}-\d{{5}}(-of-\d{{5}})?\.tfrecord(\.tmp)?$")
    for stale in sorted(p for p in out_dir.glob(f"{name}-*") if own.match(p.name)):
        stale.unlink()
    limit = shard_mb * MB
    tmp_paths: list[Path] = []
    writer: tf.io.TFRecordWriter | None = None
    size = 0
    try:
        for id_, jpeg, labels in examples:
            record = _example(id_, jpeg, labels)
            # 16 bytes of TFRecord framing (length, two CRCs) per record.
            if writer is None or (size > 0 and size + len(record) + 16 > limit):
                if writer is not None:
                    writer.close()
                tmp_paths.append(out_dir / f"{name}-{len(tmp_paths):05d}.tfrecord.tmp")
                writer = tf.io.TFRecordWriter(str(tmp_paths[-1]))
                size = 0
            writer.write(record)
            size += len(record) + 16
    finally:
        if writer is not None:
            writer.close()
    n = len(tmp_paths)
    names = [f"{name}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    for tmp, final in zip(tmp_paths, names):
        os.replace(tmp, out_dir / final)
    return names


def first_images(shard_dir: Path, files: list[str], n: int) -> list[bytes]:
    """The JPEG bytes of the first ``n`` records of ``files`` (in that order)."""
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    out: list[bytes] = []
    if n <= 0 or not files:
        return out
    for record in tf.data.TFRecordDataset([str(Path(shard_dir) / f) for f in files]).take(n):
        out.append(tf.io.parse_single_example(record, spec)["image"].numpy())
    return out


def write_index(shard_dir: Path, index: dict) -> Path:
    """Write ``index.json`` (sorted keys, so equal content gives equal bytes).

    Args:
        shard_dir: the shard folder.
        index: ``{"image_size", "classes", "splits": {split: {"count", "files"}}}`` (+ extras).

    Returns:
        The path written.
    """
    path = Path(shard_dir) / INDEX_FILE
    write_json(path, index)
    return path


def read_index(shard_dir: Path) -> dict:
    """Read ``index.json`` of a shard folder.

    Args:
        shard_dir: the folder ``augment`` wrote.

    Returns:
        ``{"image_size": int, "classes": [...], "splits": {split: {"count", "files"}}, ...}``.
    """
    path = Path(shard_dir) / INDEX_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: no shard index; run `python -m tasks.augment` first") from e


def _parser(image_size: int, n_classes: int, with_ids: bool):
    """Build the record -> (image, labels[, id]) function for ``tf.data.Dataset.map``."""
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([n_classes], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string),
    }

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = decode(ex["image"])
        # uint8 on the host: the model casts on the device (a float32 batch is 4x the bytes,
        # which halved the input pipeline's throughput in benchmarks/input_pipeline.py)
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        return (image, ex["labels"], ex["id"]) if with_ids else (image, ex["labels"])

    return parse


def make_dataset(
    shard_dir: Path,
    split: str,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    with_ids: bool = False,
    drop_remainder: bool = False,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> tf.data.Dataset:
    """Read one split back as batches.

    Args:
        shard_dir: the folder holding ``index.json`` and the shards.
        split: ``train``, ``val`` or ``test``.
        batch_size: images per batch.
        shuffle: when True, the file order and the records (through a buffer of
            ``shuffle_buffer`` serialized records, before decoding) are reshuffled every epoch,
            reproducibly from ``seed``; when False, file order then record order.
        seed: shuffle seed.
        with_ids: also yield the ids (bytes) as a third element.
        drop_remainder: drop a last, smaller batch.
        shuffle_buffer: records held for shuffling.

    Returns:
        A dataset of ``(images uint8 [B,S,S,3], labels float32 [B,N])``, or
        ``(images, labels, ids)`` with ``with_ids``.
    """
    shard_dir = Path(shard_dir)
    index = read_index(shard_dir)
    if split not in index["splits"]:
        raise KeyError(f"{shard_dir / INDEX_FILE}: no split {split!r}; have {sorted(index['splits'])}")
    entry = index["splits"][split]
    paths = tf.constant([str(shard_dir / f) for f in entry["files"]], dtype=tf.string)
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        files = files.shuffle(max(len(entry["files"]), 1), seed=seed, reshuffle_each_iteration=True)
        # Several shards read at once so one shuffle buffer mixes records from different files.
        records = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=max(1, min(4, len(entry["files"]))),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        records = files.flat_map(tf.data.TFRecordDataset)
    # A known length lets Keras size its progress bar and step counts.
    records = records.apply(tf.data.experimental.assert_cardinality(int(entry["count"])))
    ds = records.map(
        _parser(int(index["image_size"]), len(index["classes"]), with_ids),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE).with_options(input_options())


def input_options() -> tf.data.Options:
    """No autotuning thread; every ``AUTOTUNE`` parallelism is this process's usable cores.

    With autotuning on (tf.data's default), deleting an iterator waits for the tuning thread's
    next wake-up, and those wake-ups come at 0.63, 1.27, ... 10.2, 20.5, 41 s of the iterator's
    life (the period doubles from 10 ms). Keras makes a new iterator for every ``fit`` (one per
    epoch in ``train_loop``) and every validation pass, so an epoch could end up to its own
    length late: 9 of 20.5 s in the training benchmark. Decoding is what the parallelism is for
    and it is CPU-bound, so all usable cores is what the tuner would pick; the prefetch buffer
    still grows on its own when the consumer waits.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.autotune.initial_parallelism = len(os.sched_getaffinity(0))
    return options
