"""Throughput of the fused augmentation layer vs the stacked Keras random layers it replaces.

    python benchmarks/augmentation_speed.py [--size 256 --batch 64 --reps 10 --warmup 3]

Both pipelines apply the study's policy (rotation +-20 deg, shifts of 20 %, horizontal and
vertical flips, fill "nearest") to the same random batch, each call wrapped in ``tf.function``
as it is inside ``model.fit``. Writes ``benchmarks/results/augmentation_speed.json``: machine,
versions, command, every repetition and the median images/s. Timings on a shared machine vary;
the load average at start is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import cpu_model  # noqa: E402
from tasks.model.augmentation import build_augmentation  # noqa: E402

POLICY = {"rotation": 20.0, "translate": 0.2, "hflip": True, "vflip": True, "fill_mode": "nearest"}
OUT = Path(__file__).resolve().parent / "results" / "augmentation_speed.json"


def stacked() -> keras.Sequential:
    """The pre-fusion pipeline: three layers, two resamples (rotation, translation)."""
    return keras.Sequential([
        keras.layers.RandomRotation(POLICY["rotation"] / 360.0, fill_mode="nearest", seed=1),
        keras.layers.RandomTranslation(POLICY["translate"], POLICY["translate"], fill_mode="nearest", seed=2),
        keras.layers.RandomFlip("horizontal_and_vertical", seed=3),
    ])


def measure(layers: dict, batch: np.ndarray, reps: int, warmup: int) -> dict[str, list[float]]:
    """Images per second of ``reps`` timed calls per layer (after ``warmup`` untimed ones).

    The layers take turns within each repetition, so a load spike on the shared machine
    hits both rather than whichever happened to run then.
    """
    fns = {name: tf.function(lambda x, layer=layer: layer(x, training=True)) for name, layer in layers.items()}
    x = tf.constant(batch)
    for fn in fns.values():
        for _ in range(warmup):
            fn(x).numpy()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x).numpy()  # .numpy() waits for the result
            out[name].append(len(batch) / (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    batch = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    load = os.getloadavg()
    timings = measure({"fused": build_augmentation(POLICY, seed=1), "stacked": stacked()}, batch, args.reps, args.warmup)
    results = {}
    for name, reps in timings.items():
        results[name] = {"images_per_s": [round(r, 2) for r in reps], "median_images_per_s": round(statistics.median(reps), 2)}
        print(f"{name}: median {results[name]['median_images_per_s']} images/s", flush=True)
    report = {
        "command": "python benchmarks/augmentation_speed.py " + " ".join(sys.argv[1:]),
        "policy": POLICY,
        "image_size": args.size, "batch_size": args.batch, "reps": args.reps, "warmup": args.warmup,
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                    "loadavg_at_start": [round(v, 2) for v in load], "device": "CPU"},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__, "keras_backend": keras.backend.backend()},
        "results": results,
        "speedup_median": round(results["fused"]["median_images_per_s"] / results["stacked"]["median_images_per_s"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, sort_keys=True, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
