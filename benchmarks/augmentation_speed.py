"""Augmentation: the fused augmentation layer against the stacked Keras random layers it replaces.

    python -m benchmarks.run augmentation [--reps 10]

Both pipelines apply the study's policy (rotation +-20 deg, shifts of 20 %, horizontal and
vertical flips, fill "nearest") to the same random batch of 64 x 256 x 256 x 3 floats, each
call wrapped in ``tf.function`` as it is inside ``model.fit``. One measurement is ``CALLS``
calls (after untimed warm-up calls); the two variants run interleaved through the harness.
No target: the figure says what fusing the resamples buys (the stacked layers resample twice).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import common, harness

POLICY = {"rotation": 20.0, "translate": 0.2, "hflip": True, "vflip": True, "fill_mode": "nearest"}
SIZE, BATCH, CALLS, WARMUP = 256, 64, 4, 3


def stacked():
    """The pre-fusion pipeline: three layers, two resamples (rotation, translation)."""
    import keras

    return keras.Sequential([
        keras.layers.RandomRotation(POLICY["rotation"] / 360.0, fill_mode="nearest", seed=1),
        keras.layers.RandomTranslation(POLICY["translate"], POLICY["translate"], fill_mode="nearest", seed=2),
        keras.layers.RandomFlip("horizontal_and_vertical", seed=3),
    ])


def variants(size: int, batch: int, calls: int):
    """name -> a function timing ``calls`` calls of that pipeline (images/s)."""
    import numpy as np
    import tensorflow as tf

    from tasks.model.augmentation import build_augmentation

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    layers = {"fused": build_augmentation(POLICY, seed=1), "stacked": stacked()}
    fns = {name: tf.function(lambda t, layer=layer: layer(t, training=True)) for name, layer in layers.items()}
    for fn in fns.values():
        for _ in range(WARMUP):
            fn(x).numpy()

    def timed(fn) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn(x).numpy()  # .numpy() waits for the result
        return calls * batch / (time.perf_counter() - start)

    return {name: (lambda fn=fn: timed(fn)) for name, fn in fns.items()}


def run(scale: float = 1.0, reps: int = 10, out_dir: Path = common.RESULTS, command: str = "",
        max_foreign_load: float | None = None) -> Path:
    """Measure, write ``augmentation_speed.json`` and return its path (``scale`` < 1: smaller images)."""
    started, info = time.perf_counter(), common.machine()
    size = SIZE if scale >= 1 else max(32, round(SIZE * scale / 32) * 32)
    m = harness.interleave(variants(size, BATCH, CALLS), reps, max_foreign_load=max_foreign_load)
    kept = m.kept_index
    results = {k: harness.summarize(v, "images/s", 1, kept) for k, v in m.values.items()}
    ratios: dict = {}
    if kept:
        harness.compare(ratios, "fused_vs_stacked", m.kept("fused"), m.kept("stacked"))
    notes = [f"one measurement: {CALLS} calls on one {BATCH} x {size} x {size} x 3 float32 batch, after {WARMUP} "
             "untimed calls; CPU"]
    return common.write_result(
        "augmentation_speed", command, {"scale": scale, "reps": reps, "policy": POLICY, "image_size": size,
                                        "batch_size": BATCH, "calls_per_measurement": CALLS},
        results, ratios, [], notes, info, started, out_dir, m)
