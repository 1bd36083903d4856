"""Training: steps/s of train_full's model with the real input against in-memory tensors.

    python -m benchmarks.run training [--scale 1.0] [--reps 5] [--backbones small_cnn,mobilenet_v3_small]

The model is built exactly as ``python -m tasks.train full`` trains it (tasks.train.setup_device
with the params' seed and determinism, the in-model augmentation from policy.json, the base
unfrozen with BatchNorm training as ``batchnorm: auto`` does for weights=None, Adam with the
inverse-time decay, the tagsmith metrics) at the params' image size. One measurement is one
``model.fit`` call over one epoch, as train.py runs each epoch:

* ``real_input``: ``make_dataset(shuffle=True)`` over the shards (read, decode, batch), then
  the model (augmentation + base + head);
* ``in_memory``: the same model fed the same batches, decoded once beforehand and held in
  memory (``Dataset.from_tensor_slices`` over them, reshuffled each fit, with the input
  pipeline's options): the input-free ceiling. Every step sees real, distinct images, so the
  two variants do the same arithmetic on the same data.

Both use full batches (``drop_remainder=True``) so every step does the same work. Each fit is
recorded four ways: the whole call, the steady state (steps after the first), the
epoch-start stall (the time to the first batch beyond one steady step: the pipeline filling)
and the epoch-end wait (from the last batch to ``fit`` returning: the iterator's teardown).
The target is judged on the steady state (see ``judge_backbone``).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

from benchmarks import common, harness
from benchmarks.datasets import shard_dataset

BASE_IMAGES = 2500  # at scale 1: ~1,570 training images (49 steps at params' batch 32)
DEFAULT_BACKBONES = ["small_cnn", "mobilenet_v3_small"]
# Steps of a study-size epoch: ~57 % of 47,441 images in the train split, batch 64.
STUDY_STEPS = round(47441 * 0.57) // 64


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
    """Keras callback recording when training begins and when every training batch ends."""

    def __new__(cls):
        import keras

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.begin = time.perf_counter()
                self.times = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter())

        return Clock()


def measure_backbone(backbone: str, shards: Path, reps: int, max_foreign_load: float | None) -> dict:
    """Interleaved real-input / in-memory fits of one backbone's model."""
    import tensorflow as tf

    from tasks.dataset.shards import input_options, make_dataset, read_index

    model, cfg = build_full_model(backbone, shards)
    batch = cfg.batch_size
    steps = read_index(shards)["splits"]["train"]["count"] // batch
    batches = list(make_dataset(shards, "train", batch, shuffle=False, seed=0, drop_remainder=True))[:steps]
    held = (tf.stack([b[0] for b in batches]), tf.stack([b[1] for b in batches]))
    clock = _StepClock()
    epoch = [0]
    series = ("steady", "epoch_start_stall", "epoch_end_wait")
    per_fit: dict[str, list[float]] = {f"{v}_{k}": [] for v in ("real_input", "in_memory") for k in series}

    def fit(name: str) -> float:
        epoch[0] += 1
        if name == "real_input":
            data = make_dataset(shards, "train", batch, shuffle=True, seed=cfg.seed + epoch[0], drop_remainder=True)
        else:
            data = (tf.data.Dataset.from_tensor_slices(held).shuffle(steps, seed=cfg.seed + epoch[0])
                    .prefetch(1).with_options(input_options()))
        start = time.perf_counter()
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        end = time.perf_counter()
        t = clock.times
        rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else steps / (end - start)
        per_fit[f"{name}_steady"].append(rate)
        per_fit[f"{name}_epoch_start_stall"].append(max(0.0, t[0] - start - 1 / rate))
        per_fit[f"{name}_epoch_end_wait"].append(end - t[-1])
        return steps / (end - start)

    for name in ("real_input", "in_memory"):  # untimed: tracing and compiling the train step
        fit(name)
    for values in per_fit.values():
        values.clear()
    m = harness.interleave({"real_input": lambda: fit("real_input"), "in_memory": lambda: fit("in_memory")}, reps,
                           max_foreign_load=max_foreign_load)
    m.extra.update(per_fit)
    return {"m": m, "steps": steps, "batch": batch, "params": model.count_params()}


def judge_backbone(backbone: str, m: harness.Measured, steps: int, results: dict, ratios: dict) -> dict:
    """Fill ``results`` / ``ratios`` for one backbone and return its target (on the steady state).

    The target asks whether the input pipeline keeps up with the model. On a real epoch
    (~27,000 study images, ~420 steps of 64) the steady state answers that; the pipeline's
    start at each epoch (the stall) and the iterator's teardown at its end (the wait) are fixed
    costs per epoch, reported beside it in seconds and as their weight in a study-size epoch,
    since on this benchmark's short epochs they would dominate a whole-epoch ratio.
    """
    kept = m.kept_index
    for name in ("real_input", "in_memory"):
        results[f"{backbone}/{name}_whole_epoch"] = harness.summarize(m.series(name), "steps/s", 3, kept)
        results[f"{backbone}/{name}_steady"] = harness.summarize(m.series(f"{name}_steady"), "steps/s", 3, kept)
        for part in ("epoch_start_stall", "epoch_end_wait"):
            results[f"{backbone}/{name}_{part}"] = harness.summarize(m.series(f"{name}_{part}"), "s", 3, kept)
    checks = [harness.ceiling_check(f"{backbone} real input vs in-memory (steady state)",
                                    m.kept("real_input_steady"), m.kept("in_memory_steady")),
              harness.ceiling_check(f"{backbone} real input vs in-memory (whole epoch)",
                                    m.kept("real_input"), m.kept("in_memory"))]
    r = None
    if kept:
        harness.compare(ratios, f"{backbone}/real_vs_in_memory_whole_epoch", m.kept("real_input"), m.kept("in_memory"))
        r = harness.compare(ratios, f"{backbone}/real_vs_in_memory_steady", m.kept("real_input_steady"),
                            m.kept("in_memory_steady"))
        med = {f"{v}_{k}": statistics.median(m.kept(f"{v}_{k}")) for v in ("real_input", "in_memory")
               for k in ("steady", "epoch_start_stall", "epoch_end_wait")}
        study = {v: STUDY_STEPS / med[f"{v}_steady"] + med[f"{v}_epoch_start_stall"] + med[f"{v}_epoch_end_wait"]
                 for v in ("real_input", "in_memory")}
        ratios[f"{backbone}/real_vs_in_memory_study_epoch_projected"] = round(study["in_memory"] / study["real_input"], 3)
        for v in ("real_input", "in_memory"):
            ratios[f"{backbone}/epoch_start_stall_s_{v}"] = round(med[f"{v}_epoch_start_stall"], 2)
            ratios[f"{backbone}/epoch_end_wait_s_{v}"] = round(med[f"{v}_epoch_end_wait"], 2)
    why = "" if r is None or r >= 0.95 else (
        f"in steady state the real input delivers {r}x the in-memory rate: the model waits for batches")
    return harness.judge(f"training {backbone}: real input vs in-memory, steady state", r, ">= 0.95x",
                         r is not None and r >= 0.95, why, checks,
                         basis=f"steady state (steps after each epoch's first), median per-repetition ratio; "
                               f"the epoch-start stall and the epoch-end wait are reported apart (results "
                               f"*_epoch_start_stall, *_epoch_end_wait) and projected onto a study-size epoch of "
                               f"{STUDY_STEPS} steps")


def run(scale: float = 1.0, reps: int = 5, out_dir: Path = common.RESULTS, command: str = "",
        backbones: list[str] | None = None, max_foreign_load: float | None = None) -> Path:
    """Measure every backbone, write ``training.json`` and return its path."""
    import keras

    from tasks.common.config import AugmentConfig, load

    started, info = time.perf_counter(), common.machine()
    backbones = backbones or (DEFAULT_BACKBONES if scale >= 0.5 else DEFAULT_BACKBONES[:1])
    size = load(AugmentConfig, common.PROJECT / "params.yaml").image_size
    count = max(300, round(BASE_IMAGES * scale))
    shards = shard_dataset(count, size)["shards"]
    results, ratios, targets, notes, params, measured = {}, {}, [], [], {}, {}
    for backbone in backbones:
        print(f"  {backbone}", flush=True)
        out = measure_backbone(backbone, shards, reps, max_foreign_load)
        # Each backbone from a clean slate: with the previous backbone's graphs and datasets
        # still held, mobilenet_v3_small's in-memory fits ran 1.5x slower than its real input.
        keras.backend.clear_session()
        gc.collect()
        measured[backbone] = out["m"]
        targets.append(judge_backbone(backbone, out["m"], out["steps"], results, ratios))
        params[backbone] = {"steps_per_fit": out["steps"], "batch_size": out["batch"], "model_params": out["params"]}
        notes.append(f"{backbone}: {out['params']:,} parameters, {out['steps']} steps of {out['batch']} per fit "
                     f"(one epoch of the train split), image size {size} px")
    notes.append("device: CPU only (no GPU on this machine); the augmentation runs inside the model in both variants")
    notes.append("in_memory: the same batches as real_input, decoded once and held in memory, reshuffled each fit")
    return common.write_result(
        "training", command, {"scale": scale, "reps": reps, "images_generated": count, "image_size": size,
                              "backbones": backbones, "per_backbone": params, "study_epoch_steps": STUDY_STEPS},
        results, ratios, targets, notes, info, started, out_dir, measured)
