"""A saved model takes raw RGB 0..255 (preprocessing inside) and round-trips with metadata."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.model import build as M
from tasks.model.backbones import BackbonePreprocess, build_base
from tests.model.tiny_data import POLICY

META = {"classes": ["a", "b", "c", "d"], "image_size": 32, "input": "RGB 0..255", "phase": "frozen"}


def _model():
    keras.utils.set_random_seed(1)
    return M.build_model(build_base("small_cnn", 32), "small_cnn", 4, policy=POLICY, seed=1)


def test_saved_model_round_trips_with_metadata_and_same_predictions(tmp_path, tiny_arrays):
    x, _ = tiny_arrays
    model = _model()
    M.save_model(model, tmp_path / "m", META)
    loaded, meta = M.load_model(tmp_path / "m")
    assert meta == META
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert [layer.name for layer in loaded.layers[1:]] == [
        "augmentation", "preprocess", "base", "pool", "dropout", "head"]


def test_saving_twice_gives_identical_bytes(tmp_path):
    model = _model()
    M.save_model(model, tmp_path / "a", META)
    M.save_model(model, tmp_path / "b", META)
    assert (tmp_path / "a/model.keras").read_bytes() == (tmp_path / "b/model.keras").read_bytes()


def test_model_takes_raw_uint8_and_float_rgb_alike(tiny_arrays):
    x, _ = tiny_arrays
    model = _model()
    np.testing.assert_allclose(model(x.astype("uint8")), model(x), atol=1e-6)


@pytest.mark.parametrize("mode, reference", [
    ("caffe", keras.applications.vgg16.preprocess_input),
    ("tf", keras.applications.resnet_v2.preprocess_input),
])
def test_in_model_preprocessing_matches_keras_preprocess_input(mode, reference, tiny_arrays):
    x, _ = tiny_arrays
    expected = reference(x.copy())
    np.testing.assert_allclose(BackbonePreprocess(mode)(x), expected, rtol=1e-5, atol=1e-4)


def test_load_model_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.keras"):
        M.load_model(tmp_path)
