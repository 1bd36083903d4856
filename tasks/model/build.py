"""The classifier: raw RGB 0..255 -> augmentation -> backbone preprocessing -> base -> head.

Everything inside the model is keras.layers / keras.ops (runs on TensorFlow or JAX), so a saved
model takes raw images and needs no outside preprocessing. Layer names are fixed ("preprocess",
"base", "pool", "dropout", "head"; the augmentation layer comes first when there is one) so that
phases and warm starts find the parts by name.

Shared by tasks/train.py (build, freeze/unfreeze, compile, save) and tasks/evaluate.py /
tasks/serving/predict.py (load_model). Not a stage.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import h5py
import keras
from keras import layers

from tasks.common.files import write_json
from tasks.model import losses  # noqa: F401  (registers the custom losses/metrics for loading)
from tasks.model.backbones import BackbonePreprocess, get_backbone

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def build_model(base: keras.Model, backbone: str, num_classes: int, *, dropout: float = 0.2,
                policy: dict | None = None, seed: int | None = None) -> keras.Model:
    """Assemble the phase-1 model around a base: base frozen, called with training=False.

    Args:
        base: headless base from tasks.model.backbones.build_base (named "base").
        backbone: registry name (chooses the in-model preprocessing).
        num_classes: N, the width of the sigmoid head.
        dropout: dropout rate before the head.
        policy: augmentation policy (artifacts/shards/policy.json); None = no augmentation layer.
        seed: seed of the augmentation and dropout layers.
    Returns:
        An uncompiled functional model [B,S,S,3] 0..255 -> [B,N] sigmoid scores (float32).
    """
    size = base.input_shape[1]
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if policy is not None:
        # Imported here so model-only code (tests, JAX) works without the data modules.
        from tasks.model.augmentation import build_augmentation

        x = build_augmentation(policy, seed=seed)(x)  # identity at inference
    x = BackbonePreprocess(get_backbone(backbone).preprocessing, name="preprocess")(x)
    base.trainable = False
    # training=False: BatchNorm in the base uses its moving statistics even while the head is
    # trained, so a few epochs of small batches cannot wreck statistics learnt on ImageNet.
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    # The head stays float32 under mixed precision: sigmoid outputs and the loss need the range.
    outputs = layers.Dense(num_classes, activation="sigmoid", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="tagsmith")


def unfreeze(model: keras.Model, unfreeze_from: str | None = None,
             train_batchnorm: bool = False) -> keras.Model:
    """Phase 2: make the base trainable (from layer ``unfreeze_from`` on, or all of it).

    BatchNorm layers stay frozen and in inference mode unless ``train_batchnorm`` (keras-io
    fine-tuning practice): their moving statistics come from the pretraining data, and updating
    them from small fine-tuning batches shifts every later layer's input at once, which destroys
    what the pretrained base has learnt. A base trained from scratch (weights: none) has no
    such statistics, so there the caller passes train_batchnorm=True.

    Args:
        model: the phase-1 model (from build_model or load_model).
        unfreeze_from: name of the first base layer to train; None = the whole base.
        train_batchnorm: let BatchNorm layers train (batch statistics in training).
    Returns:
        A new functional model sharing the same layers and weights (needs compiling).
    """
    base = model.get_layer("base")
    base.trainable = True
    names = [layer.name for layer in base.layers]
    if unfreeze_from is not None:
        if unfreeze_from not in names:
            raise ValueError(f"unfreeze_from: no layer {unfreeze_from!r} in the base; "
                             f"its layers are {names[:5]} ... {names[-5:]}")
        for layer in base.layers[: names.index(unfreeze_from)]:
            layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization) and not train_batchnorm:
            layer.trainable = False
    # Rewire the same layers so the base is called with training=None (the fit loop's flag)
    # when BatchNorm should learn, and training=False otherwise.
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name == "base":
            x = layer(x, training=None if train_batchnorm else False)
        else:
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def make_optimizer(learning_rate: float, decay: bool, epochs: int) -> keras.optimizers.Optimizer:
    """Adam, with the study's old-Keras ``decay=lr/epochs`` when ``decay``.

    Old Keras optimizers applied ``lr_t = lr / (1 + decay * iterations)`` with iterations
    counted in optimizer STEPS (batches), not epochs. InverseTimeDecay computes
    ``lr / (1 + decay_rate * step / decay_steps)``, so decay_rate = lr / epochs and
    decay_steps = 1 is the exact equivalent. (With the study's lr = 1e-5 that decay is
    negligible: after 10,000 steps the rate is 1e-5 / 1.005.)
    """
    lr: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if decay:
        lr = keras.optimizers.schedules.InverseTimeDecay(
            learning_rate, decay_steps=1, decay_rate=learning_rate / epochs)
    return keras.optimizers.Adam(learning_rate=lr)


def compile_model(model: keras.Model, loss: keras.losses.Loss, optimizer: keras.optimizers.Optimizer,
                  *, jit_compile: bool = False) -> None:
    """Compile with the tagsmith metrics (mAP estimate ``map`` and ``p_at_1``)."""
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=losses.make_metrics(model.output_shape[-1]), jit_compile=jit_compile)


def _register_layers() -> None:
    """Import the modules whose layers a saved model may contain (registers them)."""
    import tasks.model.augmentation  # noqa: F401


def _renumber_shared_ids(config: Any, ids: dict[int, int]) -> Any:
    """Replace Keras' ``shared_object_id`` (a Python id(), different every process) by 1, 2, ..."""
    if isinstance(config, dict):
        return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id"
                    else _renumber_shared_ids(v, ids)) for k, v in config.items()}
    if isinstance(config, list):
        return [_renumber_shared_ids(v, ids) for v in config]
    return config


def _copy_h5(src: h5py.Group, dst: h5py.Group) -> None:
    """Copy an HDF5 tree without the creation times HDF5 stamps on every group."""
    for key in sorted(src.attrs):
        dst.attrs[key] = src.attrs[key]
    for name in sorted(src):
        obj = src[name]
        if isinstance(obj, h5py.Group):
            gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
            gcpl.set_obj_track_times(False)
            _copy_h5(obj, h5py.Group(h5py.h5g.create(dst.id, name.encode(), gcpl=gcpl)))
        else:
            dst.create_dataset(name, data=obj[()], track_times=False)


def _canonical_entry(name: str, data: bytes) -> bytes:
    """One .keras zip entry with everything that changes between identical saves removed."""
    if name == "metadata.json":
        meta = json.loads(data)
        meta.pop("date_saved", None)
        return json.dumps(meta, sort_keys=True).encode()
    if name == "config.json":
        return json.dumps(_renumber_shared_ids(json.loads(data), {})).encode()
    if name.endswith(".h5"):
        out = io.BytesIO()
        with h5py.File(io.BytesIO(data), "r") as src, h5py.File(out, "w", track_order=False) as dst:
            _copy_h5(src, dst)
        return out.getvalue()
    return data


def save_model(model: keras.Model, model_dir: Path, metadata: dict[str, Any]) -> None:
    """Write ``model.keras`` and ``metadata.json`` into ``model_dir`` (created if missing).

    The .keras zip is rewritten with fixed entry dates, without Keras' ``date_saved``, Python
    object ids or HDF5 creation times, so the same weights give the same bytes.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / ".tmp_model.keras"
    model.save(tmp)
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(model_dir / MODEL_FILE, "w",
                                                      zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            data = _canonical_entry(name, src.read(name))
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                         compress_type=zipfile.ZIP_DEFLATED)
    tmp.unlink()
    write_json(model_dir / METADATA_FILE, metadata)


def load_model(model_dir: Path) -> tuple[keras.Model, dict[str, Any]]:
    """Load a model folder written by save_model.

    Args:
        model_dir: folder with model.keras and metadata.json.
    Returns:
        (uncompiled keras.Model taking RGB 0..255, metadata dict).
    """
    model_dir = Path(model_dir)
    for name in (MODEL_FILE, METADATA_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: missing (not a tagsmith model folder)")
    _register_layers()
    model = keras.saving.load_model(model_dir / MODEL_FILE, compile=False)
    return model, json.loads((model_dir / METADATA_FILE).read_text())
