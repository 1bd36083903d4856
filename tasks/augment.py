"""Stage ``augment``: turn the ingested dataset into TFRecord shards + the augmentation policy.

    python -m tasks.augment

Reads ``params.yaml`` (section ``augment``; the dataset root and the image-size limits come
from section ``ingest``, the same values ingest used), ``artifacts/dataset/manifest.csv`` and
``classes.json``. Each image is prepared by ``preprocess.encode`` (decoded with
``imageio.open_rgb``, resized to ``image_size``, ``stretch`` or ``pad``, JPEG-encoded: the recipe
predict and the serving graph repeat) and streamed into ``artifacts/shards/`` by
``shards.write_split``, split by split and, within a split, group by group (a sliced source's
slice; any other source is one group), in manifest (id) order. Decoding runs in ``workers``
processes; results are consumed in bounded windows, so memory never holds the dataset.

Why per group: a data version that adds a slice leaves the other slices' rows (and, the splits
never moving, their split) unchanged, so their shards are the same bytes as last time. A group's
key is the sha256 of the recipe (preprocessing, shard size, classes, code and library versions)
and its sorted (id, path, sha256, labels) rows; a group the memo (``tasks/dataset/memo.py``)
holds is brought from it instead of encoded, so a new slice costs its own images. The pool of
encoding processes starts only when a group needs encoding.
The augmentation itself is not baked into the shards: it runs inside the model, from
``policy.json``; ``preview.png`` shows what it does to a few training images.

An image that fails here is reported (path + reason), counted in ``index.json``'s
``skipped`` and left out; the run goes on. Outputs are byte-deterministic.
"""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.common.config import AugmentConfig, IngestConfig, load
from tasks.common.errors import DataError, stage_main
from tasks.common.files import write_json
from tasks.dataset.imageio import ImageFault, resolve_under
from tasks.dataset.memo import Memo, code_version, open_memo, recipe_key
from tasks.dataset.preprocess import Preprocess, encode

# tasks.dataset.shards (TensorFlow), tasks.model.augmentation (Keras) and matplotlib are imported inside the
# functions that need them: decode workers are spawned and import this module, and should not
# pay seconds of TensorFlow start-up each.

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("id", "path", "labels", "split")
PREVIEW_SEED = 0  # fixed, so preview.png is the same bytes on every run
WINDOW_PER_WORKER = 256  # images in flight per worker: bounds memory whatever the consumer's pace


@dataclass
class Summary:
    """What the stage wrote: kept images per split, and every image left out (with why)."""

    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _encode_one(row: tuple[str, str], *, root: Path, spec: Preprocess,
                max_pixels: int, max_side: int) -> tuple[str, bytes | None, str]:
    """Prepare one manifest row as the shards store it (``preprocess.encode``; runs in a worker process).

    Returns:
        ``(id, jpeg_bytes, "")`` or ``(id, None, reason)`` when the image cannot be used.
    """
    id_, rel = row
    path = None
    try:
        path = resolve_under(root, rel)
        return id_, encode(path, spec, max_pixels=max_pixels, max_side=max_side), ""
    except ImageFault as e:
        reason = f"{e.reason}: {e.message}"
    except (OSError, ValueError) as e:  # anything else Pillow raises on a bad file
        reason = f"undecodable: {type(e).__name__}: {e}"
    # The reason goes into index.json: name the file relative to the root, never absolutely.
    return id_, None, reason.replace(str(path), rel) if path is not None else reason


def read_manifest(dataset_dir: Path) -> tuple[list[dict[str, str]], list[str]]:
    """Read ingest's ``manifest.csv`` and ``classes.json``.

    Args:
        dataset_dir: ingest's output folder.

    Returns:
        The manifest rows sorted by id (strings; no label is ``""``) and the class names in
        index order. (The csv module, not pandas: spawned workers import this module.)
    """
    path = dataset_dir / "manifest.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; have {reader.fieldnames}")
        rows = sorted(reader, key=lambda r: r["id"])
    classes = json.loads((dataset_dir / "classes.json").read_text())["classes"]
    return rows, list(classes)


def _multi_hot(labels: str, class_index: dict[str, int]) -> np.ndarray:
    """``"cat;dog"`` -> multi-hot vector; an unknown name raises ``KeyError`` naming it."""
    vec = np.zeros(len(class_index), np.float32)
    for name in filter(None, labels.split(";")):
        if name not in class_index:
            raise KeyError(f"unknown_class: label {name!r} not in classes.json")
        vec[class_index[name]] = 1.0
    return vec


def _stream(rows: list[dict[str, str]], job, pool, workers: int, class_index: dict[str, int], summary: Summary,
            bar: tqdm) -> Iterator[tuple[str, bytes, np.ndarray]]:
    """Yield ``(id, jpeg, labels)`` for the usable rows, in order; record the others."""
    window = WINDOW_PER_WORKER * workers
    for start in range(0, len(rows), window):
        block = rows[start:start + window]
        pairs = [(r["id"], r["path"]) for r in block]
        results = pool.imap(job, pairs, chunksize=16) if pool else map(job, pairs)
        for (id_, jpeg, reason), row in zip(results, block):
            bar.update(1)
            rel = row["path"]
            try:
                vec = _multi_hot(row["labels"], class_index)
            except KeyError as e:
                jpeg, reason = None, str(e.args[0])
            if jpeg is None:
                summary.skipped.append({"id": id_, "path": rel, "reason": reason})
                tqdm.write(f"skipped {rel}: {reason}", file=sys.stderr)
                continue
            yield id_, jpeg, vec


def group_of(path: str) -> str:
    """The group a manifest path's shards belong to: the slice id of a sliced source's
    ``slices/<id>/...``; ``""`` (one group) for any other source."""
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "slices" else ""


def shard_recipe(cfg: AugmentConfig, classes: list[str], max_pixels: int, max_side: int) -> str:
    """What a group's shard bytes depend on besides its rows: the preprocessing, shard size,
    class list and limits, and the code and library versions that encode and write them."""
    import PIL
    import tensorflow as tf

    from tasks.dataset import imageio, preprocess, resample, shards
    code = code_version(__file__, preprocess.__file__, imageio.__file__, resample.__file__, shards.__file__)
    return recipe_key(cfg.image_size, cfg.resize, cfg.jpeg_quality, cfg.shard_mb, classes, max_pixels, max_side,
                      code, PIL.__version__, tf.__version__, np.__version__)


def _group_key(recipe: str, split: str, group: str, rows: list[dict[str, str]]) -> str | None:
    """The memo key of one (split, group): None when a row lacks a real sha256 (never memoized)."""
    if not all(len(r.get("sha256") or "") == 64 for r in rows):
        return None
    return "shards-" + recipe_key(recipe, split, group, [(r["id"], r["path"], r["sha256"], r["labels"]) for r in rows])


def run(cfg: AugmentConfig, *, data_root: Path = Path("data"), dataset_dir: Path = Path("artifacts/dataset"),
        out_dir: Path = Path("artifacts/shards"), max_pixels: int = 89_478_485, max_side: int = 20_000,
        memo: Memo | None = None) -> Summary:
    """Write shards, ``index.json``, ``policy.json`` and ``preview.png``.

    Shards are written per group (a sliced source's slice, else one group) and split, as
    ``{split}[-{slice}]-{i:05d}-of-{n:05d}.tfrecord``; with a memo, a group whose key (recipe +
    its sorted rows) is there is brought in from it instead of being encoded again, so a new
    slice costs its own images. ``index.json`` lists every split's files, group by group.

    Args:
        cfg: the ``augment`` section.
        data_root: the dataset root the manifest's paths are relative to (ingest.root).
        dataset_dir: ingest's output folder (manifest.csv, classes.json).
        out_dir: where to write; earlier shards there are replaced.
        max_pixels, max_side: image-size limits for ``open_rgb`` (ingest's).
        memo: where groups' shards are reused from and stored; None: encode everything. The
            outputs are the same either way.

    Returns:
        Counts per split, shard names and the skipped images.
    """
    from tasks.dataset.shards import first_images, write_index, write_split

    manifest, classes = read_manifest(Path(dataset_dir))
    class_index = {name: i for i, name in enumerate(classes)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out_dir.glob("*.tfrecord")) + sorted(out_dir.glob("*.tfrecord.tmp")):
        stale.unlink()  # groups that are gone, and partial files of an interrupted run
    summary = Summary(counts={s: 0 for s in SPLITS}, files={s: [] for s in SPLITS})
    unknown = [r for r in manifest if r["split"] not in SPLITS]
    for r in unknown:
        summary.skipped.append({"id": r["id"], "path": r["path"], "reason": f"unknown_split: {r['split']!r} not in {SPLITS}"})
    spec = Preprocess(cfg.image_size, cfg.resize, cfg.jpeg_quality)
    job = functools.partial(_encode_one, root=Path(data_root), spec=spec, max_pixels=max_pixels, max_side=max_side)
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in manifest:
        if r["split"] in SPLITS:
            groups.setdefault((r["split"], group_of(r["path"])), []).append(r)
    recipe = shard_recipe(cfg, classes, max_pixels, max_side) if memo is not None else ""
    todo = []
    for (split, group), rows in sorted(groups.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1])):
        key = _group_key(recipe, split, group, rows) if memo is not None else None
        meta = memo.get_files(key, out_dir) if key is not None else None
        if meta is not None:
            summary.files[split] += [f["name"] for f in meta["files"]]
            summary.counts[split] += meta["count"]
            summary.skipped += meta["skipped"]
        todo.append((split, group, rows, key, meta))
    pool = None
    try:
        with tqdm(total=sum(len(t[2]) for t in todo if t[4] is None), desc="augment", unit="img") as bar:
            for split, group, rows, key, meta in todo:
                if meta is not None:
                    continue
                if pool is None and cfg.workers > 1:
                    # spawn, not fork: the parent has TensorFlow's threads running, which fork does not survive.
                    pool = multiprocessing.get_context("spawn").Pool(cfg.workers)
                got = Summary()
                stream = _stream(rows, job, pool, cfg.workers, class_index, got, bar)
                names = write_split(stream, out_dir, split, cfg.shard_mb, name="-".join(filter(None, (split, group))))
                count = len(rows) - len(got.skipped)
                if key is not None:
                    memo.put_files(key, [out_dir / n for n in names], {"count": count, "skipped": got.skipped})
                summary.files[split] += names
                summary.counts[split] += count
                summary.skipped += got.skipped
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary.skipped.sort(key=lambda s: s["id"])
    write_index(out_dir, {
        "image_size": cfg.image_size,
        # how images were prepared: prediction must prepare new images exactly the same way
        "resize": cfg.resize,
        "jpeg_quality": cfg.jpeg_quality,
        "classes": classes,
        "splits": {s: {"count": summary.counts[s], "files": summary.files[s]} for s in SPLITS},
        "skipped": summary.skipped,
    })
    policy = cfg.of()
    write_json(out_dir / "policy.json", policy)
    # the first training images in shard order: the same whether they were encoded now or reused
    preview = first_images(out_dir, summary.files["train"], cfg.preview_images)
    if not preview:
        raise DataError(f"{dataset_dir}/manifest.csv: no usable training image; nothing to train on")
    write_preview(preview, policy, cfg.preview_draws, out_dir / "preview.png")
    return summary


def write_preview(jpegs: list[bytes], policy: dict, draws: int, path: Path) -> None:
    """Grid of training images: the original, then ``draws`` augmented draws, per row.

    Args:
        jpegs: encoded images, one per row (all the same size).
        policy: the augmentation policy.
        draws: augmented columns.
        path: the PNG to write (no timestamp or version metadata, so bytes are reproducible).
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from tasks.model.augmentation import build_augmentation

    originals = np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB"), np.float32) for j in jpegs])
    layer = build_augmentation(policy, seed=PREVIEW_SEED)
    columns = [originals] + [np.asarray(layer(originals, training=True)) for _ in range(draws)]
    fig, axes = plt.subplots(len(jpegs), draws + 1, figsize=(1.6 * (draws + 1), 1.6 * len(jpegs)), squeeze=False)
    for r in range(len(jpegs)):
        for c, images in enumerate(columns):
            axes[r, c].imshow(np.clip(images[r], 0, 255).astype(np.uint8), interpolation="nearest")
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title("original" if c == 0 else f"draw {c}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    """``python -m tasks.augment``: run with params.yaml and print the summary."""
    def body() -> Summary:
        ingest, cfg = load(IngestConfig), load(AugmentConfig)
        return run(cfg, data_root=Path(ingest.root), max_pixels=ingest.max_pixels, max_side=ingest.max_side,
                   memo=open_memo())

    summary = stage_main("augment", body)
    print(json.dumps({"counts": summary.counts, "skipped": len(summary.skipped)}, sort_keys=True, indent=2))


if __name__ == "__main__":
    main()
