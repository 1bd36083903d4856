"""The fused in-model augmentation layer (tasks/model/augmentation.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tasks.model.augmentation import build_augmentation

FULL = {"rotation": 20.0, "translate": 0.2, "zoom": 0.1, "hflip": True, "vflip": True,
        "fill_mode": "nearest", "brightness": 0.1, "contrast": 0.2}


def batch(n: int = 6, h: int = 16, w: int = 20) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, h, w, 3)).astype("float32")


def test_identity_at_inference():
    x = batch()
    layer = build_augmentation(FULL, seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference is the default


def test_policy_with_everything_off_returns_input_while_training():
    x = batch()
    layer = build_augmentation({"rotation": 0.0, "translate": 0.0, "hflip": False, "vflip": False}, seed=1)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), x, atol=1e-3)


def test_pure_hflip_policy_is_np_flip_or_identity_and_draws_both():
    x = batch(n=16)
    y = np.asarray(build_augmentation({"hflip": True}, seed=3)(x, training=True))
    flipped = [np.allclose(y[i], np.flip(x[i], axis=1), atol=1e-3) for i in range(len(x))]
    same = [np.allclose(y[i], x[i], atol=1e-3) for i in range(len(x))]
    assert all(f != s for f, s in zip(flipped, same))
    assert 0 < sum(flipped) < len(x)


def test_rotation_and_zoom_keep_the_centre_fixed():
    layer = build_augmentation({"rotation": 90.0, "zoom": 0.3, "hflip": True, "vflip": True}, seed=0)
    m = np.asarray(layer.transforms(8, 15, 21))
    cx, cy = 10.0, 7.0
    np.testing.assert_allclose(m[:, 0] * cx + m[:, 1] * cy + m[:, 2], cx, atol=1e-4)
    np.testing.assert_allclose(m[:, 3] * cx + m[:, 4] * cy + m[:, 5], cy, atol=1e-4)
    assert np.ptp(m[:, 0]) > 0.1  # the draws differ per image


def test_training_output_stays_in_range_and_shape_and_changes_the_image():
    x = batch()
    y = np.asarray(build_augmentation(FULL, seed=2)(x, training=True))
    assert y.shape == x.shape
    assert y.min() >= 0.0 and y.max() <= 255.0
    assert not np.allclose(y, x)


def test_unknown_policy_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="rotaton"):
        build_augmentation({"rotaton": 10.0})


def test_model_with_the_layer_saves_and_loads(tmp_path: Path):
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.GlobalAveragePooling2D()(build_augmentation(FULL, seed=5)(inputs))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    layer = loaded.get_layer("augmentation")
    assert {k: v for k, v in layer.get_config().items() if k in FULL} == FULL
    x = batch(n=2, h=16, w=16)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-4)


def test_runs_on_the_jax_backend():
    code = (
        "import numpy as np, keras; from tasks.model.augmentation import build_augmentation;"
        f"l = build_augmentation({FULL!r}, seed=1);"
        "x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype('float32');"
        "y = np.asarray(l(x, training=True)); f = build_augmentation({'hflip': True}, seed=2);"
        "z = np.asarray(f(x, training=True));"
        "ok = all(np.allclose(z[i], x[i], atol=1e-3) or np.allclose(z[i], x[i, :, ::-1], atol=1e-3) for i in range(4));"
        "assert keras.backend.backend() == 'jax' and y.shape == x.shape and 0 <= y.min() and y.max() <= 255 and ok;"
        "print('ok')"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
