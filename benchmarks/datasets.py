"""Benchmark data: synthetic images (tasks.demo.synth) and their shards, made once and reused.

Everything lives under ``common.bench_root()`` (``/tmp/tagsmith-bench`` by default), never in
the repository. The generator is deterministic, so a folder made earlier for the same
(count, size) holds the same bytes and is reused; a ``done.json`` marker, written last, says
the folder is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.common import PROJECT, bench_root


def synth_dataset(count: int, size: int, workers: int = 2) -> Path:
    """The study-preset synthetic dataset with ``count`` images at ``size`` px.

    Args:
        count: number of images (the study has 47,441).
        size: stored side in pixels.
        workers: generator processes.

    Returns:
        The dataset root (images/, labels.tsv, classes.txt, test.txt).
    """
    from tasks.demo import synth

    home = bench_root() / f"synth-{count}-{size}"
    if (home / "done.json").is_file():
        return home / "data"
    shutil.rmtree(home, ignore_errors=True)
    summary = synth.generate(home / "data", preset="study", count=count, size=size, workers=workers)
    (home / "done.json").write_text(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}))
    return home / "data"


def shard_dataset(count: int, size: int, workers: int = 2) -> dict[str, Path]:
    """Ingest + shard a synthetic dataset in-process with the project's own stage functions.

    Args:
        count: images.
        size: image side, for both the stored JPEGs and the shards.
        workers: decode processes of ingest and augment.

    Returns:
        ``{"data": dataset root, "dataset": ingest's folder, "shards": augment's folder}``.
    """
    from tasks import augment, ingest
    from tasks.common.config import AugmentConfig, IngestConfig, load

    data = synth_dataset(count, size, workers)
    home = data.parent / "prepared"
    paths = {"data": data, "dataset": home / "dataset", "shards": home / "shards"}
    if (home / "done.json").is_file():
        return paths
    shutil.rmtree(home, ignore_errors=True)
    params = PROJECT / "params.yaml"
    icfg = load(IngestConfig, params).model_copy(update={"root": str(data), "workers": workers})
    ingest.run(icfg, out_dir=paths["dataset"])
    acfg = load(AugmentConfig, params).model_copy(update={"image_size": size, "workers": workers})
    augment.run(acfg, data_root=data, dataset_dir=paths["dataset"], out_dir=paths["shards"],
                max_pixels=icfg.max_pixels, max_side=icfg.max_side)
    (home / "done.json").write_text("{}")
    return paths
