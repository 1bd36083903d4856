"""Stages train_frozen and train_full: transfer learning in two phases.

    python -m tasks.train frozen   # artifacts/shards -> artifacts/models/frozen
    python -m tasks.train full     # + artifacts/models/frozen -> artifacts/models/full

Phase 1 (frozen): a base from the registry (tasks/model/backbones.py) with its starting weights
(tasks/weights/resolve.py), frozen and run in inference mode, under a new head; only the head trains.
Phase 2 (full): the phase-1 model with its base unfrozen (BatchNorm kept frozen, see
tasks/model.unfreeze), recompiled with a low learning rate. Both: Adam (+ the study's inverse
time decay), early stopping on validation mAP with the best weights restored, a checkpoint per
epoch to resume from (tasks/model/train_loop.py), deterministic on CPU. Writes model.keras,
metadata.json (with ``preprocess``: how to prepare an image for the model, from the shards'
index), history.csv and live/ (dvclive); the SavedModel for TF Serving is exported at
publish time (its bytes are not reproducible, DVC outputs must be). ``train_full.epochs: 0``
means "frozen only": the phase-1 model is passed on unchanged (the study's base-frozen rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tasks.common import paths  # noqa: E402
from tasks.common.config import RegistryConfig, TrainFrozenConfig, TrainFullConfig, load  # noqa: E402
from tasks.common.errors import DataError, stage_main  # noqa: E402
from tasks.common.files import sha256_file, write_json  # noqa: E402
from tasks.dataset.preprocess import Preprocess  # noqa: E402
from tasks.dataset.shards import make_dataset, read_index  # noqa: E402
from tasks.model import build as M  # noqa: E402
from tasks.model.backbones import get_backbone  # noqa: E402
from tasks.model.checkpoints import RemoteCheckpoints, configured_location, stage_fingerprint  # noqa: E402
from tasks.model.losses import make_loss, positive_weights  # noqa: E402
from tasks.model.train_loop import fit_epochs  # noqa: E402
from tasks.weights.resolve import Registry, apply_warm_start, build_base_with_weights, warm_start_source  # noqa: E402
from tasks.registry.client import s3_options  # noqa: E402
from tasks.registry.resolved import pinned_version, production_missing, warm_start_alias  # noqa: E402
from tasks.registry.stores import Store, open_store  # noqa: E402

SHARDS = paths.SHARDS
MODELS = paths.MODELS
CHECKPOINTS = Path(".tagsmith/checkpoints")


@dataclass(frozen=True)
class TrainSummary:
    phase: str
    out_dir: str
    epochs_run: int
    best_epoch: int
    best_val_map: float | None
    resumed_at: int


def data_fingerprint(shard_dir: Path, index: dict) -> str:
    """sha256 over index.json, policy.json and every shard's bytes (streamed): the checkpoint
    key must change whenever the data does, even with the same file names and counts."""
    h = hashlib.sha256()
    names = ["index.json", "policy.json"] + sorted(
        f for split in index["splits"].values() for f in split["files"])
    for name in names:
        path = Path(shard_dir) / name
        h.update(name.encode() + b"\0")
        if path.is_file():
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def code_fingerprint() -> str:
    """sha256 over the source of tasks/: a checkpoint must not outlive a change of the code
    that wrote it (the key a plain ``dvc repro`` resumes on, without the flow's fingerprint)."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def setup_device(seed: int, deterministic: bool) -> bool:
    """Seed every RNG; op determinism when asked; mixed precision only on a GPU.

    Returns:
        True when a GPU is present (then the caller also compiles with XLA).
    """
    # Fresh Keras state: auto-generated layer names (stored in model.keras) restart at zero, so
    # two runs in one process write the same bytes, just like two runs in separate processes.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "float32")
    return gpu


def make_strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over ``devices``, or over all GPUs when there are several."""
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _label_counts(shard_dir: Path) -> tuple[list[float], int]:
    total, n = None, 0
    for _, y in make_dataset(shard_dir, "train", 256, shuffle=False, seed=0):
        s = y.numpy().sum(axis=0)
        total = s if total is None else total + s
        n += int(y.shape[0])
    return [float(c) for c in total], n


def _write_live(live_dir: Path):
    """Open dvclive in ``live_dir``; returns a per-epoch logging callback and the Live."""
    from dvclive import Live

    live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(row: dict) -> None:
        for key, value in sorted(row.items()):
            if key in ("epoch",):
                continue
            split = "eval" if key.startswith("val_") else "train"
            live.log_metric(f"{split}/{key.removeprefix('val_')}", value)
        live.next_step()

    return log, live


def run(phase: str, cfg: TrainFrozenConfig | TrainFullConfig, *, shard_dir: Path = SHARDS,
        models_dir: Path = MODELS, checkpoints: Path = CHECKPOINTS,
        checkpoint_store: Store | None = None, fingerprint: str | None = None,
        devices: list[str] | None = None, verbose: int | str = "auto",
        reg: RegistryConfig | None = None) -> TrainSummary:
    """Train one phase and write its model folder ``models_dir/phase``.

    Args:
        phase: "frozen" or "full".
        cfg: that phase's params section.
        shard_dir: TFRecord shards + index.json + policy.json (augment stage).
        models_dir: parent of the frozen/ and full/ model folders.
        checkpoints: root of the resumable checkpoints (outside every DVC out).
        checkpoint_store: shared storage every epoch's checkpoint is mirrored to and resumed
            from (tasks/model/checkpoints.py); None: local checkpoints only.
        fingerprint: the stage's fingerprint that keys the shared checkpoints; default: the one
            the flow passed in the environment, else a hash of params, data, upstream model and code.
        devices: explicit devices for MirroredStrategy (tests); default: all GPUs if > 1.
        verbose: Keras fit verbosity.
        reg: the registry section (weights: production); default: its defaults.
    Returns:
        A TrainSummary.
    """
    if phase not in ("frozen", "full"):
        raise ValueError(f"phase must be 'frozen' or 'full', got {phase!r}")
    if phase == "full" and cfg.epochs == 0:
        return frozen_only(Path(models_dir) / "frozen", Path(models_dir) / "full")
    gpu = setup_device(cfg.seed, cfg.deterministic)
    index = read_index(shard_dir)
    classes, size = list(index["classes"]), int(index["image_size"])
    # how augment prepared the images: the model folder must say it, so predict and serving can
    preprocess = Preprocess.from_index(index, Path(shard_dir) / "index.json").as_dict()
    data_sha = sha256_file(Path(shard_dir) / "index.json")
    out_dir = Path(models_dir) / phase
    frozen_dir = Path(models_dir) / "frozen"
    data = {"shards_index_sha256": data_sha, "shards_sha256": data_fingerprint(shard_dir, index)}
    key = {"phase": phase, "params": cfg.model_dump(), "data": data,
           "frozen": sha256_file(frozen_dir / M.MODEL_FILE) if phase == "full" else None,
           "code": code_fingerprint()}
    content_key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    ckpt_dir = Path(checkpoints) / phase / content_key[:16]
    stage = f"train_{phase}"
    remote = None
    if checkpoint_store is not None:
        remote = RemoteCheckpoints(checkpoint_store, stage,
                                   fingerprint or stage_fingerprint(stage) or content_key)

    strategy = make_strategy(devices)
    global_batch = cfg.batch_size * strategy.num_replicas_in_sync
    pos_w = None
    if cfg.loss == "weighted_bce":
        pos_w = positive_weights(*_label_counts(shard_dir))
    with strategy.scope():
        if phase == "frozen":
            assert isinstance(cfg, TrainFrozenConfig)
            policy_path = Path(shard_dir) / "policy.json"
            policy = json.loads(policy_path.read_text()) if policy_path.is_file() else None
            reg = reg if reg is not None else RegistryConfig()
            alias = warm_start_alias(cfg, reg)
            weights, first = cfg.weights, ""
            if (weights == "production" and cfg.warm_start_fallback is not None
                    and production_missing("train_frozen", reg.store, reg.model_name, alias, s3_options(reg))):
                weights = cfg.warm_start_fallback
                first = f" (warm_start_fallback: {reg.model_name}@{alias} was unset)"
                print(f"train frozen: {reg.model_name}@{alias} is unset: starting from {weights} weights{first}")
            base, origin = build_base_with_weights(cfg.backbone, size, weights)
            model = M.build_model(base, cfg.backbone, len(classes), dropout=cfg.dropout,
                                  policy=policy, seed=cfg.seed)
            pinned = pinned_version("train_frozen", reg.store, reg.model_name, alias)
            source = warm_start_source(weights, Registry(reg.store, reg.model_name, alias, pinned))
            if source is not None:
                origin = apply_warm_start(model, source, cfg.backbone, classes)
                if weights == "production":
                    origin = f"production:{reg.store}/{reg.model_name}@{alias}={source.name} {origin}"
            origin += first
            meta_extra = {"backbone": cfg.backbone, "weights": origin}
        else:
            assert isinstance(cfg, TrainFullConfig)
            model, frozen_meta = M.load_model(frozen_dir)
            if frozen_meta["classes"] != classes or frozen_meta["image_size"] != size:
                raise DataError(f"{frozen_dir}: trained on other classes/image size than {shard_dir}")
            train_bn = cfg.batchnorm == "train" or (
                cfg.batchnorm == "auto" and frozen_meta["weights"] == "none")
            model = M.unfreeze(model, cfg.unfreeze_from, train_batchnorm=train_bn)
            meta_extra = {"backbone": frozen_meta["backbone"], "weights": frozen_meta["weights"],
                          "frozen_params": frozen_meta["params"], "batchnorm_trained": train_bn}
        M.compile_model(model, make_loss(cfg.loss, pos_w),
                        M.make_optimizer(cfg.learning_rate, cfg.decay, cfg.epochs), jit_compile=gpu)

    val_n = int(index["splits"].get("val", {}).get("count", 0))
    val = make_dataset(shard_dir, "val", global_batch, shuffle=False, seed=cfg.seed) if val_n else None

    def make_train(epoch: int) -> tf.data.Dataset:
        return make_dataset(shard_dir, "train", global_batch, shuffle=True, seed=cfg.seed + epoch)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    log, live = _write_live(out_dir / "live")
    with strategy.scope():  # a resumed optimizer's slots must be created as mirrored variables
        result = fit_epochs(model, make_train, val, epochs=cfg.epochs, patience=cfg.patience,
                            ckpt_dir=ckpt_dir, monitor="val_map" if val is not None else "map",
                            on_epoch=log, verbose=verbose, remote=remote)
    live.end()
    history = pd.DataFrame(result["history"])  # rows replayed from a checkpoint: keys sorted
    first = ["epoch", "lr"]
    history = history[first + sorted(c for c in history.columns if c not in first)]
    history.to_csv(out_dir / "history.csv", index=False)
    metadata = {
        "classes": classes, "image_size": size, "input": "RGB 0..255", "phase": phase,
        "preprocess": preprocess,
        "preprocessing": get_backbone(meta_extra["backbone"]).description,
        "params": cfg.model_dump(), "data": data,
        "loss": cfg.loss, "epochs_run": len(result["history"]), "best_epoch": result["best_epoch"],
        "global_batch_size": global_batch, **meta_extra,
    }
    M.save_model(model, out_dir, metadata)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the stage is complete: nothing to resume
    if remote is not None:
        try:
            remote.delete_all()
        except Exception as e:  # noqa: BLE001 - the model is saved; a leftover costs only storage
            print(f"WARNING: could not delete the checkpoints at {remote.uri()}: {e}", flush=True)
    best = result["best"]
    return TrainSummary(phase, str(out_dir), len(result["history"]), result["best_epoch"],
                        None if best is None else float(best), result["resumed_at"])


def frozen_only(frozen_dir: Path, out_dir: Path) -> TrainSummary:
    """Pass the phase-1 model on as the final one (``train_full.epochs: 0``), saying so."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for name in (M.MODEL_FILE, "history.csv"):
        shutil.copyfile(frozen_dir / name, out_dir / name)
    meta = json.loads((frozen_dir / "metadata.json").read_text())
    meta.update(phase="full", frozen_only=True, frozen_params=meta["params"])
    write_json(out_dir / "metadata.json", meta)
    return TrainSummary("full", str(out_dir), 0, int(meta.get("best_epoch") or 0), None, 0)


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.train frozen|full``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("frozen", "full"):
        sys.exit("usage: python -m tasks.train frozen|full")
    phase = argv[0]

    def body() -> TrainSummary:
        cfg = load(TrainFrozenConfig if phase == "frozen" else TrainFullConfig)
        where = configured_location()  # CheckpointConfigError: a bad TAGSMITH_CHECKPOINTS
        store = open_store(*where) if where else None
        if store is not None:
            print(f"checkpoints mirrored to {store.uri()}", flush=True)
        return run(phase, cfg, checkpoint_store=store, verbose=1 if sys.stdout.isatty() else 2,
                   reg=load(RegistryConfig) if phase == "frozen" else None)

    summary = stage_main(f"train_{phase}", body)
    print(json.dumps(summary.__dict__, sort_keys=True, indent=2))


if __name__ == "__main__":
    main()
