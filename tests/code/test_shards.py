"""TFRecord shards: write_split / read_index / make_dataset (tasks/dataset/shards.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.dataset.shards import make_dataset, read_index, write_split, write_index

SIZE, N_CLASSES = 16, 3


def examples(n: int) -> list[tuple[str, bytes, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        pixels = np.full((SIZE, SIZE, 3), (i * 37) % 256, np.uint8)
        pixels[: SIZE // 2] = rng.integers(0, 256, 3, dtype=np.uint8)  # two flat halves: little JPEG loss
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=95)
        out.append((f"img{i:03d}", buf.getvalue(), np.eye(N_CLASSES, dtype=np.float32)[i % N_CLASSES]))
    return out


def write(tmp_path: Path, n: int, shard_mb: float = 150) -> list[tuple[str, bytes, np.ndarray]]:
    exs = examples(n)
    files = write_split(iter(exs), tmp_path, "train", shard_mb)
    write_index(tmp_path, {"image_size": SIZE, "classes": ["a", "b", "c"],
                           "splits": {"train": {"count": n, "files": files}}})
    return exs


def ids_of(ds) -> list[str]:
    return [i.decode() for _, _, ids in ds.as_numpy_iterator() for i in ids]


def test_round_trip_keeps_ids_labels_and_pixels(tmp_path: Path):
    exs = write(tmp_path, 10)
    batches = list(make_dataset(tmp_path, "train", 4, shuffle=False, seed=0, with_ids=True).as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.uint8 and images.shape == (10, SIZE, SIZE, 3)
    assert ids_of(make_dataset(tmp_path, "train", 4, shuffle=False, seed=0, with_ids=True)) == [e[0] for e in exs]
    np.testing.assert_array_equal(labels, np.stack([e[2] for e in exs]))
    for image, (_, jpeg, _) in zip(images, exs):
        original = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)
        # TF and Pillow upsample chroma differently: a few levels apart, never a different image.
        assert np.abs(image - original).mean() <= 2.0 and np.abs(image - original).max() <= 8.0


def test_small_shard_mb_splits_into_several_files_whose_counts_add_up(tmp_path: Path):
    write(tmp_path, 12, shard_mb=0.002)  # ~2 kB per shard: a few records each
    files = read_index(tmp_path)["splits"]["train"]["files"]
    assert len(files) > 2
    assert files == [f"train-{i:05d}-of-{len(files):05d}.tfrecord" for i in range(len(files))]
    assert sorted(p.name for p in tmp_path.glob("*.tfrecord")) == files
    assert len(ids_of(make_dataset(tmp_path, "train", 5, shuffle=False, seed=0, with_ids=True))) == 12


def test_writing_is_byte_deterministic_and_leaves_no_stale_shards(tmp_path: Path):
    write(tmp_path / "a", 12, shard_mb=0.002)
    write(tmp_path / "b", 30, shard_mb=0.002)
    write(tmp_path / "b", 12, shard_mb=0.002)  # rewrite with fewer shards
    a = sorted((tmp_path / "a").glob("*.tfrecord"))
    b = sorted((tmp_path / "b").glob("*.tfrecord"))
    assert [p.name for p in a] == [p.name for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_order_is_fixed_without_shuffle_and_changes_per_epoch_with_shuffle(tmp_path: Path):
    exs = write(tmp_path, 24, shard_mb=0.003)
    plain = make_dataset(tmp_path, "train", 8, shuffle=False, seed=0, with_ids=True)
    assert ids_of(plain) == ids_of(plain) == [e[0] for e in exs]
    shuffled = make_dataset(tmp_path, "train", 8, shuffle=True, seed=7, with_ids=True)
    epoch1, epoch2 = ids_of(shuffled), ids_of(shuffled)
    assert sorted(epoch1) == sorted(epoch2) == [e[0] for e in exs]
    assert epoch1 != epoch2 and epoch1 != [e[0] for e in exs]
    again = make_dataset(tmp_path, "train", 8, shuffle=True, seed=7, with_ids=True)
    assert ids_of(again) == epoch1  # reproducible from the seed


def test_empty_split_writes_no_file_and_reads_as_empty(tmp_path: Path):
    assert write_split(iter([]), tmp_path, "val", 1) == []
    write_index(tmp_path, {"image_size": SIZE, "classes": ["a", "b", "c"],
                           "splits": {"val": {"count": 0, "files": []}}})
    assert list(make_dataset(tmp_path, "val", 4, shuffle=False, seed=0)) == []


def test_the_input_pipeline_runs_without_the_autotuning_thread_on_all_usable_cores(tmp_path: Path):
    """With tf.data's tuning thread, deleting an iterator (Keras does at every fit and validation
    pass) waits for the thread's next wake-up: seconds per epoch (benchmarks/training.py records
    the wait as *_epoch_end_wait). The parallelism it would tune is set to the usable cores."""
    import os

    write(tmp_path, 4)
    options = make_dataset(tmp_path, "train", 2, shuffle=True, seed=0).options()
    assert options.autotune.enabled is False
    assert options.autotune.initial_parallelism == len(os.sched_getaffinity(0))
