"""The epoch loop of tasks/train.py: per-epoch checkpoints, resume, early stopping.

One ``model.fit`` call per epoch, with a training set freshly shuffled from ``seed + epoch``,
so epoch k's data order does not depend on how many epochs this process has run: a run
killed after epoch k and started again sees exactly what an uninterrupted run would.
After every epoch the full training state (model variables including the random-seed state
of the augmentation and dropout layers, optimizer variables including the step count that
drives the learning-rate schedule, history, early-stopping state and best weights) goes to a
checkpoint folder OUTSIDE the stage's out dir (DVC deletes outs before it runs a stage).
Written to a temporary folder and renamed, so a kill mid-write leaves the previous one intact.
With a ``remote`` (tasks/model/checkpoints.py) each finished epoch is also mirrored to shared storage,
and a run whose own folder holds nothing newer starts from the newest verified epoch there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tasks.common.files import write_json
from tasks.model.checkpoints import RemoteCheckpoints

STATE_FILE, VARS_FILE, BEST_FILE = "state.json", "variables.npz", "best.npz"


def _snapshot(variables: list) -> dict[str, np.ndarray]:
    return {f"v{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}


def _restore(variables: list, arrays: Any) -> None:
    if len(arrays.files) != len(variables):
        raise RuntimeError(f"checkpoint holds {len(arrays.files)} variables, the model "
                           f"{len(variables)}: delete the checkpoint folder")
    for i, v in enumerate(variables):
        v.assign(arrays[f"v{i:05d}"])


def _state_vars(model: keras.Model) -> list:
    return list(model.variables) + list(model.optimizer.variables)


def _epoch_of(folder: Path | None) -> int:
    return int(folder.name.removeprefix("epoch-")) if folder is not None else 0


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete epoch folder under ``ckpt_dir`` (None if none)."""
    done = sorted(ckpt_dir.glob("epoch-*")) if ckpt_dir.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(ckpt_dir: Path, model: keras.Model, state: dict, best: dict | None) -> Path:
    """Write epoch ``state["epoch"]``'s checkpoint atomically; drop older ones. Returns its folder."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f"tmp-{state['epoch']:04d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / VARS_FILE, **_snapshot(_state_vars(model)))
    if best is not None:
        np.savez(tmp / BEST_FILE, **best)
    write_json(tmp / STATE_FILE, state)
    final = ckpt_dir / f"epoch-{state['epoch']:04d}"
    tmp.rename(final)
    for old in ckpt_dir.iterdir():
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir: Path, model: keras.Model) -> tuple[dict, dict | None] | None:
    """Restore the newest checkpoint into ``model`` (and its optimizer).

    Returns:
        (state dict, best-weights arrays or None), or None when there is no checkpoint.
    """
    last = latest_checkpoint(ckpt_dir)
    if last is None:
        return None
    model.optimizer.build(model.trainable_variables)  # optimizer slots exist before assigning
    with np.load(last / VARS_FILE) as arrays:
        _restore(_state_vars(model), arrays)
    best = None
    if (last / BEST_FILE).is_file():
        with np.load(last / BEST_FILE) as arrays:
            best = {k: arrays[k] for k in arrays.files}
    return json.loads((last / STATE_FILE).read_text()), best


def current_lr(model: keras.Model) -> float:
    """The learning rate the optimizer uses at its current step."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def fit_epochs(model: keras.Model, make_train: Callable[[int], Any], val_data: Any, *,
               epochs: int, patience: int, ckpt_dir: Path, monitor: str = "val_map",
               on_epoch: Callable[[dict], None] | None = None, verbose: int | str = "auto",
               remote: RemoteCheckpoints | None = None) -> dict:
    """Train up to ``epochs`` epochs with early stopping on ``monitor`` (higher is better).

    Args:
        model: compiled model.
        make_train: epoch index -> that epoch's (shuffled) training dataset.
        val_data: validation dataset or None.
        epochs: maximum number of epochs.
        patience: epochs without improvement before stopping (Keras EarlyStopping semantics).
        ckpt_dir: this run's checkpoint folder; resumed from when it holds an epoch.
        monitor: the history key to maximise.
        on_epoch: called with each history row (also for epochs replayed from a checkpoint).
        verbose: Keras fit verbosity (1 = progress bar).
        remote: shared checkpoint storage: pulled from before training when it holds a newer
            epoch than ``ckpt_dir``, pushed to after every epoch (a failed push fails the run:
            an unmirrored run would not survive losing its machine).
    Returns:
        {"history": [rows], "best_epoch": int, "best": float, "stopped_early": bool, "resumed_at": int}.
        The model holds the best epoch's weights.
    """
    state = {"epoch": 0, "history": [], "best": None, "best_epoch": 0, "wait": 0, "stop": False}
    best_weights = None
    if remote is not None:
        remote.pull_latest(ckpt_dir, newer_than=_epoch_of(latest_checkpoint(ckpt_dir)))
    resumed = load_checkpoint(ckpt_dir, model)
    if resumed is not None:
        state, best_weights = resumed
        print(f"resuming after epoch {state['epoch']} from {ckpt_dir}", flush=True)
    resumed_at = state["epoch"]
    for row in state["history"]:
        if on_epoch:
            on_epoch(row)
    for epoch in range(state["epoch"], epochs):
        if state["stop"]:
            break
        print(f"epoch {epoch + 1}/{epochs}", flush=True)
        lr = current_lr(model)
        h = model.fit(make_train(epoch), validation_data=val_data, initial_epoch=epoch,
                      epochs=epoch + 1, verbose=verbose, shuffle=False)
        row = {"epoch": epoch + 1, "lr": lr, **{k: float(v[-1]) for k, v in h.history.items()}}
        if monitor not in row:
            raise KeyError(f"monitor {monitor!r} not in the logs {sorted(row)}")
        # Like keras.callbacks.EarlyStopping(mode="max", min_delta=0, restore_best_weights=True)
        if state["best"] is None or row[monitor] > state["best"]:
            state.update(best=row[monitor], best_epoch=epoch + 1, wait=0)
            best_weights = _snapshot(model.weights)
        else:
            state["wait"] += 1
            state["stop"] = state["wait"] >= patience
        state["history"].append(row)
        state["epoch"] = epoch + 1
        saved = save_checkpoint(ckpt_dir, model, state, best_weights)
        if remote is not None:
            remote.push(saved, state["epoch"])
        if on_epoch:
            on_epoch(row)
    if best_weights is not None:
        for i, w in enumerate(model.weights):
            w.assign(best_weights[f"v{i:05d}"])
    return {"history": state["history"], "best_epoch": state["best_epoch"], "best": state["best"],
            "stopped_early": bool(state["stop"]), "resumed_at": resumed_at}
