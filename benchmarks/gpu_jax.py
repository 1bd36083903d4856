"""GPU training throughput of tagsmith's model under Keras' JAX backend (no TensorFlow needed).

On the GPU machine (Python 3.12 with JAX + CUDA, no TensorFlow/Keras, no network), after
``make gpu-wheels`` here has filled ``.whl/``, one command from the repository root::

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:. KERAS_BACKEND=jax python benchmarks/gpu_jax.py --out "$OUT"

(``.whl/`` is git-ignored: a copy of the tree sent there must carry it.) Then copy
``gpu_jax.json`` into benchmarks/results and run ``python -m benchmarks.summary``.
The smallest run (``--backbones small_cnn --image-size 32 --batch 8 --steps 2 --device cpu``)
is what tests/code/test_gpu_jax.py runs on a CPU.

What is measured, per backbone (default resnet50_v2 and efficientnet_v2_b0, 224 px, batch
256, ``mixed_float16``, XLA): ``model.fit`` of train_full's model (the fused augmentation
layer inside it, on the device; base unfrozen with BatchNorm training; Adam; the tagsmith
metrics) over ``--steps`` steps of one synthetic batch of uint8 images held on the device, so
no host input is involved. One measurement is one such fit after an untimed one (compilation);
backbones are interleaved through the harness. Reference: NVIDIA's published training
throughput for ResNet-50 v1.5 on one A100 with AMP and XLA in TensorFlow, batch 256 (about
2,375 images/s, ``NVIDIA_A100_RESNET50``); ours is ResNet50V2 (pre-activation, similar
FLOPs) in Keras on JAX, with augmentation and metrics in the step, on whatever GPU ran it.
The comparison is a ratio, not a target.

Imports only keras, jax, numpy and tagsmith's TensorFlow-free model modules (tasks.model.backbones,
tasks.model.build, tasks.model.augmentation, tasks.model.losses) plus the harness.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
NVIDIA_A100_RESNET50 = 2375.0  # images/s: NVIDIA DeepLearningExamples, TF ResNet-50 v1.5, A100, AMP+XLA, bs 256
POLICY = {"rotation": 20.0, "translate": 0.2, "hflip": True, "vflip": True, "fill_mode": "nearest"}
NUM_CLASSES = 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_jax.py", description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="resnet50_v2,efficientnet_v2_b0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50, help="training steps per measurement")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precision", default="mixed_float16", choices=["mixed_float16", "mixed_bfloat16", "float32"])
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results")
    ap.add_argument("--max-foreign-load", type=float, default=None)
    ap.add_argument("--allow-dirty", action="store_true", help="write into benchmarks/results from a dirty tree")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.reps < 1 or args.batch < 1:
        ap.error("--steps, --reps and --batch must be positive")
    return args


def setup_backend(device: str) -> None:
    """Keras on JAX, on the requested platform; must run before keras/jax are imported."""
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        raise SystemExit(f"KERAS_BACKEND={backend}: this benchmark runs Keras on JAX")
    if "keras" in sys.modules or "jax" in sys.modules:
        raise SystemExit("setup_backend must run before keras or jax are imported")
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"


def build(backbone: str, size: int, jit: bool):
    """train_full's model for ``backbone`` (weights none), compiled as tasks.train compiles it."""
    import keras

    from tasks.model import build as M
    from tasks.model.backbones import build_base
    from tasks.model.losses import make_loss

    base = build_base(backbone, size, None)
    model = M.build_model(base, backbone, NUM_CLASSES, dropout=0.2, policy=POLICY, seed=0)
    model = M.unfreeze(model, None, train_batchnorm=True)
    M.compile_model(model, make_loss("bce"), keras.optimizers.Adam(1e-4), jit_compile=jit)
    return model


def measure(backbone: str, args: argparse.Namespace):
    """The model and a function doing one timed fit of ``args.steps`` steps (returns steps/s)."""
    import jax
    import keras
    import numpy as np

    model = build(backbone, args.image_size, jit=True)
    rng = np.random.default_rng(0)
    x = jax.device_put(rng.integers(0, 256, (args.batch, args.image_size, args.image_size, 3), dtype=np.uint8))
    y = jax.device_put((rng.random((args.batch, NUM_CLASSES)) < 0.2).astype("float32"))

    class Batches(keras.utils.PyDataset):
        """The same device-resident batch, ``steps`` times: no host input in the timing."""

        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            return args.steps

        def __getitem__(self, i):
            return x, y

    data = Batches()

    def fit() -> float:
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)  # returns after the last step's update is synced back
        return args.steps / (time.perf_counter() - start)

    fit()  # untimed: tracing and XLA compilation
    return model, fit


def run(argv: list[str] | None = None) -> Path:
    """Measure every backbone, write ``gpu_jax.json`` in ``--out`` and return its path."""
    args = parse(argv)
    setup_backend(args.device)
    sys.path.insert(0, str(PROJECT))
    import jax
    import keras

    from benchmarks import common, harness

    from benchmarks.run import refusal

    prov, source = _provenance(common)
    why = refusal(args.out, prov, args.allow_dirty, args.reps, ["gpu_jax"])
    if why:
        raise SystemExit(f"refusing to write results: {why}")
    keras.mixed_precision.set_global_policy(args.precision)
    started, info = time.perf_counter(), common.machine()
    info["jax_devices"] = [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in jax.devices()]
    backbones = args.backbones.split(",")
    fits, params = {}, {}
    for b in backbones:
        print(f"  building and compiling {b}", flush=True)
        model, fits[b] = measure(b, args)
        params[b] = model.count_params()
    m = harness.interleave(fits, args.reps, max_foreign_load=args.max_foreign_load)
    kept = m.kept_index
    results, ratios = {}, {}
    for b in backbones:
        results[f"{b}/steps_per_s"] = harness.summarize(m.values[b], "steps/s", 3, kept)
        results[f"{b}/images_per_s"] = harness.summarize([v * args.batch for v in m.values[b]], "images/s", 1, kept)
        med = results[f"{b}/images_per_s"]["median"]
        ratios[f"{b}/images_per_s_vs_nvidia_a100_resnet50"] = harness.ratio(med, NVIDIA_A100_RESNET50)
    notes = [f"devices: {', '.join(info['jax_devices'])}; Keras {keras.__version__} on JAX {jax.__version__}",
             f"{args.precision}, XLA (jit_compile), batch {args.batch}, {args.image_size} px, {args.steps} steps per "
             "measurement on one device-resident synthetic batch; the fused augmentation runs in the model",
             f"reference: NVIDIA's ResNet-50 v1.5 on one A100, AMP+XLA, TensorFlow, batch 256: about "
             f"{NVIDIA_A100_RESNET50:,.0f} images/s (a ratio, not a target: other model variant, framework and GPU)",
             *(f"{b}: {n:,} parameters" for b, n in params.items())]
    return common.write_result(
        "gpu_jax", "python benchmarks/gpu_jax.py " + " ".join(sys.argv[1:] if argv is None else argv),
        {"backbones": backbones, "image_size": args.image_size, "batch_size": args.batch, "steps": args.steps,
         "reps": args.reps, "precision": args.precision, "device": args.device,
         "reference_images_per_s": NVIDIA_A100_RESNET50},
        results, ratios, [], notes, info, started, args.out, m, {"provenance_source": source}, prov)


def _provenance(common) -> tuple[dict, str]:
    """The commit this ran from, and where that is known from: git, or ``.whl/provenance.json``."""
    import json

    prov = common.run_provenance()
    recorded = PROJECT / ".whl" / "provenance.json"
    if prov["commit"] is None and recorded.is_file():  # the tree copied to the GPU machine has no .git
        return json.loads(recorded.read_text()), "recorded by make gpu-wheels where this tree was sent from"
    return prov, "git" if prov["commit"] else "unknown: no git checkout and no .whl/provenance.json"


if __name__ == "__main__":
    print(f"wrote {run()}")
