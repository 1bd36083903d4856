"""Predict labels for image files with a trained or published model.

    python -m tasks.serving.predict MODEL_REF IMAGE_OR_FOLDER... --out predictions.csv \
        [--store registry] [--model-name tagsmith] [--batch-size 64]

MODEL_REF is a model folder (artifacts/models/full), a registry version folder (local path
or s3://bucket/prefix/<model>/<version>), or an alias/version name looked up in --store.
Images are prepared exactly as augment prepared the shards the model was evaluated on
(``tasks.dataset.preprocess.model_input``, with the recipe the model's metadata.json records
under ``preprocess``; a folder without it is refused, never guessed), so scores match
evaluate's predictions.csv and the SavedModel's ``serving_bytes`` signature. An unreadable image is
reported (file, reason) and skipped; the rest go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tasks.common import paths
from tasks.common.errors import DataError, stage_main
from tasks.dataset import imageio
from tasks.dataset.preprocess import Preprocess, model_input
from tasks.evaluation import scoring
from tasks.registry import client as registry

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CACHE_DIR = paths.REGISTRY_CACHE


@dataclass
class PredictSummary:
    """What a prediction run did."""

    out_csv: Path
    model_dir: Path
    n_inputs: int
    n_predicted: int
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    thresholds_source: str = ""


def resolve_model(model_ref: str, store: str | None, model_name: str, cache_dir: Path) -> Path:
    """Turn a model reference into a local, verified model folder (see the module docstring)."""
    if model_ref.startswith("s3://"):
        base, model, version = model_ref.rstrip("/").rsplit("/", 2)
        return registry.resolve_model_dir(base, model, version, cache_dir)
    path = Path(model_ref)
    if path.is_dir():
        if (path / registry.MANIFEST).is_file():  # a version folder of a local registry
            problems = registry.verify(registry.open_store(str(path.parent.parent)), path.parent.name, path.name)
            if problems:
                raise registry.RegistryError("; ".join(problems))
        return path
    if store is None:
        raise FileNotFoundError(f"{model_ref!r} is not a folder; pass store= to resolve it as an alias/version")
    return registry.resolve_model_dir(store, model_name, model_ref, cache_dir)


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, folders walked recursively (image extensions only), each sorted."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)  # a missing or broken file is reported by open_rgb
    return out


def _thresholds(model_dir: Path, meta: dict[str, Any], n: int) -> tuple[np.ndarray, str]:
    """Per-class thresholds: metadata (registry), thresholds.json beside the model, else evaluate's
    default threshold."""
    thr = meta.get("thresholds")
    source = "metadata.json"
    if thr is None and (model_dir / "thresholds.json").is_file():
        thr, source = json.loads((model_dir / "thresholds.json").read_text()), "thresholds.json"
    if thr is None:
        return (np.full(n, scoring.DEFAULT_THRESHOLD),
                f"default {scoring.DEFAULT_THRESHOLD} (no tuned thresholds found)")
    if list(thr["classes"]) != list(meta["classes"]):
        raise DataError(f"{model_dir}: thresholds classes differ from the model's")
    return np.asarray(thr["thresholds"], dtype=np.float64), source


def predict(
    model_ref: str,
    inputs: list[Path],
    out_csv: Path,
    batch_size: int = 64,
    store: str | None = None,
    model_name: str = "tagsmith",
    cache_dir: Path = CACHE_DIR,
) -> PredictSummary:
    """Score images and write labels + per-class scores to ``out_csv``.

    Args:
        model_ref: model folder, registry version folder/URI, or alias/version in ``store``.
        inputs: image files and/or folders (walked recursively, sorted).
        out_csv: output CSV: file, labels (';'-joined names), one score column per class.
        batch_size: images per model call.
        store: registry store URI for alias/version references.
        model_name: registry model name.
        cache_dir: where S3 versions are downloaded.
    Returns:
        PredictSummary (failures list the files skipped and why).
    """
    from tasks.model.build import load_model

    model_dir = resolve_model(model_ref, store, model_name, Path(cache_dir))
    model, meta = load_model(model_dir)
    classes = list(meta["classes"])
    thr, thr_source = _thresholds(model_dir, meta, len(classes))
    spec = Preprocess.from_metadata(meta, model_dir)

    files = collect_images(list(inputs))
    failures: list[tuple[str, str]] = []
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    n_done = 0
    with open(out_csv, "w", newline="") as f, tqdm(total=len(files), unit="img", desc="predict") as bar:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "labels", *classes])
        for start in range(0, len(files), batch_size):
            ok_paths, arrays = [], []
            for p in files[start:start + batch_size]:
                try:
                    arrays.append(model_input(p, spec))
                    ok_paths.append(p)
                except imageio.ImageFault as e:
                    failures.append((str(p), e.reason))
                bar.update(1)
            if not arrays:
                continue
            scores = np.asarray(model(np.stack(arrays), training=False), dtype=np.float64)
            for p, s in zip(ok_paths, scores):
                labels = ";".join(c for c, v, t in zip(classes, s, thr) if v >= t)
                w.writerow([str(p), labels, *(f"{v:.6f}" for v in s)])
            n_done += len(ok_paths)
    return PredictSummary(out_csv, model_dir, len(files), n_done, failures, thr_source)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.serving.predict``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ap = argparse.ArgumentParser(prog="python -m tasks.serving.predict", description=__doc__.split("\n")[0])
    ap.add_argument("model_ref")
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("predictions.csv"))
    ap.add_argument("--store", default=None)
    ap.add_argument("--model-name", default="tagsmith")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)
    s = stage_main("predict", lambda: predict(a.model_ref, a.inputs, a.out, a.batch_size, a.store, a.model_name))
    for file, reason in s.failures:
        print(f"predict: skipped {file}: {reason}", file=sys.stderr)
    print(f"predict: {s.n_predicted}/{s.n_inputs} images -> {s.out_csv} (thresholds: {s.thresholds_source})")


if __name__ == "__main__":
    main()
