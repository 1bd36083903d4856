"""The train stage end to end on tiny shards: outputs per the contract, and determinism."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tasks import train
from tasks.common.config import TrainFrozenConfig, TrainFullConfig
from tasks.model.build import load_model

FROZEN = TrainFrozenConfig(backbone="small_cnn", weights="none", epochs=2, batch_size=8,
                           learning_rate=1e-3, dropout=0.1)
FULL = TrainFullConfig(epochs=1, batch_size=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    kw = dict(shard_dir=tiny_shards, models_dir=root / "models", checkpoints=root / "ck", verbose=0)
    return root, train.run("frozen", FROZEN, **kw), train.run("full", FULL, **kw)


def test_both_phases_write_model_metadata_history_and_live_plots(trained):
    root, frozen, full = trained
    assert (frozen.epochs_run, full.epochs_run) == (2, 1)
    for phase in ("frozen", "full"):
        out = root / "models" / phase
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["phase"] == phase and meta["classes"] == ["a", "b", "c", "d"]
        assert meta["input"] == "RGB 0..255" and meta["image_size"] == 32
        # complete at training time: how to prepare an image, from the shards' index
        assert meta["preprocess"] == {"image_size": 32, "resize": "stretch", "jpeg_quality": 95,
                                      "channel_order": "RGB", "value_range": [0, 255]}
        assert meta["data"]["shards_index_sha256"] and meta["backbone"] == "small_cnn"
        history = (out / "history.csv").read_text().splitlines()
        assert history[0].split(",") == ["epoch", "lr", "loss", "map", "p_at_1", "val_loss",
                                         "val_map", "val_p_at_1"]
        for name in ("train/loss", "eval/loss", "train/map", "eval/map", "eval/p_at_1"):
            assert (out / "live/plots/metrics" / f"{name}.tsv").is_file()
    # the SavedModel is exported at publish time: its bytes differ per export (not a DVC out)
    assert not (root / "models/full/saved_model").exists()
    assert not any((root / "ck").rglob("epoch-*")), "checkpoints are cleared when a stage completes"


def test_full_phase_trains_the_base_of_the_frozen_model(trained):
    root, _, _ = trained
    frozen, _ = load_model(root / "models/frozen")
    full, _ = load_model(root / "models/full")
    a, b = frozen.get_layer("base").get_weights(), full.get_layer("base").get_weights()
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_two_runs_give_identical_weights_and_bytes(trained, tiny_shards, tmp_path):
    root, _, _ = trained
    train.run("frozen", FROZEN, shard_dir=tiny_shards, models_dir=tmp_path, checkpoints=tmp_path / "ck",
              verbose=0)
    first, _ = load_model(root / "models/frozen")
    second, _ = load_model(tmp_path / "frozen")
    for x, y in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(x, y)
    assert (root / "models/frozen/model.keras").read_bytes() == (tmp_path / "frozen/model.keras").read_bytes()


def test_shards_that_do_not_say_how_images_were_prepared_are_refused(tiny_shards, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    index = json.loads((shards / "index.json").read_text())
    del index["resize"]
    (shards / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"index.json lacks \['resize'\]"):
        train.run("frozen", FROZEN, shard_dir=shards, models_dir=tmp_path / "m", checkpoints=tmp_path / "ck")
    assert not (tmp_path / "m").exists()
def test_trained_models_carry_exactly_the_policy_of_policy_json(trained, tiny_shards):
    from tasks.common.config import AugmentPolicy

    fields = set(AugmentPolicy.model_fields)

    root, _, _ = trained
    policy = json.loads((tiny_shards / "policy.json").read_text())
    assert set(policy) == fields
    for phase in ("frozen", "full"):
        model, _ = load_model(root / "models" / phase)
        layer = model.get_layer("augmentation")
        # right after the input, before the backbone's preprocessing: it sees raw 0..255 pixels
        assert [lay.name for lay in model.layers[1:3]] == ["augmentation", "preprocess"], phase
        config = layer.get_config()
        assert {k: config[k] for k in fields} == policy, phase
        x = np.full((2, 32, 32, 3), 100.0, "float32")
        x[:, :8] = 250.0  # an asymmetric image: rotation, shifts and flips all move it
        assert np.array_equal(np.asarray(layer(x, training=False)), x)
        assert not np.array_equal(np.asarray(layer(x, training=True)), x)


def test_a_first_warm_start_with_no_production_model_uses_the_fallback(trained, tiny_shards, tmp_path, monkeypatch):
    from tasks.common.config import RegistryConfig
    from tasks.common.errors import TagsmithError

    root, _, _ = trained
    monkeypatch.chdir(tmp_path)  # no resolve_production output here: the registry itself is asked
    reg = RegistryConfig(store=str(tmp_path / "registry"))  # nothing published yet
    kw = dict(shard_dir=tiny_shards, checkpoints=tmp_path / "ck", verbose=0, reg=reg)
    nightly = FROZEN.model_copy(update={"weights": "production", "warm_start_fallback": "none"})
    train.run("frozen", nightly, models_dir=tmp_path / "m", **kw)
    model, meta = load_model(tmp_path / "m/frozen")
    assert "warm_start_fallback" in meta["weights"]
    reference, _ = load_model(root / "models/frozen")  # the same params with weights: none
    for x, y in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(TagsmithError, match="production"):  # no fallback: refused, naming the alias
        train.run("frozen", FROZEN.model_copy(update={"weights": "production"}), models_dir=tmp_path / "n", **kw)


def test_production_is_no_fallback():
    with pytest.raises(ValueError, match="warm_start_fallback"):
        TrainFrozenConfig(weights="production", warm_start_fallback="production")
