"""Training: steps/s of train_full's model with the real input against in-memory tensors.

    python -m benchmarks.run training [--scale 1.0] [--reps 5] [--backbones small_cnn,mobilenet_v3_small]

The model is built exactly as ``python -m tasks.train full`` trains it (tasks.train.setup_device
with the params' seed and determinism, the in-model augmentation from policy.json, the base
unfrozen with BatchNorm training as ``batchnorm: auto`` does for weights=None, Adam with the
inverse-time decay, the tagsmith metrics) at the params' image size. One measurement is one
``model.fit`` call over one epoch, as train.py runs each epoch:

* ``real_input``: ``make_dataset(shuffle=True)`` over the shards (read, decode, batch), then
  the model (augmentation + base + head);
* ``in_memory``: the same number of steps of the same model fed one batch of the same shape
  held in memory (``Dataset.from_tensors(...).repeat()``): the input-free ceiling.

Both use full batches (``drop_remainder=True``) so every step does the same work. Besides the
whole call (start-up of the epoch's pipeline included), the steady-state rate (steps after
the first) is recorded.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks import common
from benchmarks.datasets import shard_dataset

BASE_IMAGES = 2500  # at scale 1: ~1,430 training images, 22 steps of 64 per epoch
DEFAULT_BACKBONES = ["small_cnn", "mobilenet_v3_small"]


def build_full_model(backbone: str, shards: Path):
    """train_full's model for ``backbone`` (weights=None), compiled as tasks.train compiles it."""
    from tasks.model import build as M
    from tasks.model.backbones import build_base
    from tasks.common.config import TrainFrozenConfig, TrainFullConfig, load
    from tasks.model.losses import make_loss
    from tasks.dataset.shards import read_index
    from tasks.train import setup_device

    frozen = load(TrainFrozenConfig, common.PROJECT / "params.yaml")
    full = load(TrainFullConfig, common.PROJECT / "params.yaml")
    gpu = setup_device(full.seed, full.deterministic)
    index = read_index(shards)
    policy = json.loads((shards / "policy.json").read_text())
    base = build_base(backbone, int(index["image_size"]), None)
    model = M.build_model(base, backbone, len(index["classes"]), dropout=frozen.dropout, policy=policy,
                          seed=full.seed)
    model = M.unfreeze(model, full.unfreeze_from, train_batchnorm=full.batchnorm in ("auto", "train"))
    M.compile_model(model, make_loss(full.loss), M.make_optimizer(full.learning_rate, full.decay, full.epochs),
                    jit_compile=gpu)
    return model, full


class _StepClock:
    """Keras callback recording the time at the end of every training batch."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())

        return Clock()


def measure_backbone(backbone: str, shards: Path, reps: int) -> dict:
    """Interleaved real-input / in-memory fits of one backbone's model."""
    import tensorflow as tf

    from tasks.dataset.shards import make_dataset, read_index

    model, cfg = build_full_model(backbone, shards)
    batch = cfg.batch_size
    steps = read_index(shards)["splits"]["train"]["count"] // batch
    first = next(iter(make_dataset(shards, "train", batch, shuffle=False, seed=0, drop_remainder=True)))
    memory = tf.data.Dataset.from_tensors(first).repeat()
    clock = _StepClock()
    epoch = [0]
    steady: dict[str, list[float]] = {"real_input": [], "in_memory": []}

    def fit(name: str) -> float:
        epoch[0] += 1
        if name == "real_input":
            data = make_dataset(shards, "train", batch, shuffle=True, seed=cfg.seed + epoch[0], drop_remainder=True)
        else:
            data = memory.take(steps)
        start = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        wall = time.perf_counter() - start
        t = clock.times
        steady[name].append((len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else steps / wall)
        return steps / wall

    for name in ("real_input", "in_memory"):  # untimed: tracing and compiling the train step
        fit(name)
        steady[name].clear()
    raw, loads = common.interleave({"real_input": lambda: fit("real_input"), "in_memory": lambda: fit("in_memory")}, reps)
    return {"raw": raw, "steady": steady, "loads": loads, "steps": steps, "batch": batch,
            "params": model.count_params()}


def run(scale: float = 1.0, reps: int = 5, out_dir: Path = common.RESULTS, command: str = "",
        backbones: list[str] | None = None) -> Path:
    """Measure every backbone, write ``training.json`` and return its path."""
    from tasks.common.config import AugmentConfig, load

    started, info = time.perf_counter(), common.machine()
    backbones = backbones or (DEFAULT_BACKBONES if scale >= 0.5 else DEFAULT_BACKBONES[:1])
    size = load(AugmentConfig, common.PROJECT / "params.yaml").image_size
    count = max(300, round(BASE_IMAGES * scale))
    shards = shard_dataset(count, size)["shards"]
    results, ratios, targets, notes, loads, params = {}, {}, [], [], {}, {}
    for backbone in backbones:
        print(f"  {backbone}", flush=True)
        m = measure_backbone(backbone, shards, reps)
        for name in ("real_input", "in_memory"):
            results[f"{backbone}/{name}"] = common.summarize(m["raw"][name], "steps/s")
            results[f"{backbone}/{name}_steady"] = common.summarize(m["steady"][name], "steps/s")
        raw = {**m["raw"], **{f"{k}_steady": v for k, v in m["steady"].items()}}
        med = {k: statistics.median(v) for k, v in raw.items()}
        r = common.both(ratios, f"{backbone}/real_vs_in_memory", raw, med, "real_input", "in_memory")
        common.both(ratios, f"{backbone}/real_vs_in_memory_steady", raw, med, "real_input_steady", "in_memory_steady")
        # Seconds an epoch spends beyond its steady-state steps: the pipeline's start.
        start = {k: statistics.median(m["steps"] / a - m["steps"] / b for a, b in zip(raw[k], raw[f"{k}_steady"]))
                 for k in ("real_input", "in_memory")}
        ratios[f"{backbone}/epoch_start_s_real_input"] = round(start["real_input"], 2)
        ratios[f"{backbone}/epoch_start_s_in_memory"] = round(start["in_memory"], 2)
        why = "" if r >= 0.95 else (
            f"steady state (first step of each epoch excluded) is "
            f"{ratios[f'{backbone}/real_vs_in_memory_steady_paired']}x; the gap is the start of each epoch's "
            f"input pipeline (median {start['real_input']:.2f} s with the real input, {start['in_memory']:.2f} s "
            f"from memory), which weighs on an epoch of only {m['steps']} steps of "
            f"{1 / med['in_memory_steady']:.2f} s")
        targets.append(common.target(f"training {backbone}: real input vs in-memory", r, ">= 0.95x", r >= 0.95, why))
        loads[backbone] = m["loads"]
        params[backbone] = {"steps_per_fit": m["steps"], "batch_size": m["batch"], "model_params": m["params"]}
        notes.append(f"{backbone}: {m['params']:,} parameters, {m['steps']} steps of {m['batch']} per fit "
                     f"(one epoch of the train split), image size {size} px")
    notes.append("device: CPU only (no GPU on this machine); the augmentation runs inside the model in both variants")
    return common.write_result(
        "training", command, {"scale": scale, "reps": reps, "images_generated": count, "image_size": size,
                              "backbones": backbones, "per_backbone": params},
        results, ratios, targets, notes, info, started, out_dir, {"loadavg_per_rep": loads})
