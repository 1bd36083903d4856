"""Weight sources: warm starts that re-init only the head (ImageNet: test_imagenet_download.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.model import build as M
from tasks.model.backbones import build_base
from tasks.weights.resolve import WeightsError, apply_warm_start, warm_start_source, Registry


def test_unknown_weights_path_is_a_clear_error():
    with pytest.raises(WeightsError, match="no such file"):
        warm_start_source("nowhere/model.keras", Registry())


def _model(n_classes: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return M.build_model(build_base("small_cnn", 32), "small_cnn", n_classes)


@pytest.mark.parametrize("classes, head_copied", [(["a", "b", "c"], True), (["a", "b", "x"], False)])
def test_warm_start_copies_the_base_and_the_head_only_for_the_same_classes(tmp_path, classes, head_copied):
    src = _model(3, seed=1)
    M.save_model(src, tmp_path / "prod", {"classes": ["a", "b", "c"], "backbone": "small_cnn"})
    dst = _model(3, seed=2)
    origin = apply_warm_start(dst, tmp_path / "prod", "small_cnn", classes)
    for a, b in zip(src.get_layer("base").get_weights(), dst.get_layer("base").get_weights()):
        np.testing.assert_array_equal(a, b)
    same_head = np.array_equal(src.get_layer("head").get_weights()[0], dst.get_layer("head").get_weights()[0])
    assert same_head == head_copied
    assert ("re-initialised" in origin) == (not head_copied)


def test_warm_start_from_another_backbone_is_refused(tmp_path):
    M.save_model(_model(3, seed=1), tmp_path / "prod", {"classes": ["a"], "backbone": "vgg16"})
    with pytest.raises(WeightsError, match="backbone vgg16"):
        apply_warm_start(_model(3, seed=2), tmp_path / "prod", "small_cnn", ["a"])


def test_production_weights_resolve_the_registry_alias(monkeypatch, tmp_path):
    import tasks.registry.client

    calls = []
    monkeypatch.setattr(tasks.registry.client, "resolve_model_dir",
                        lambda store, name, alias, cache_dir: calls.append((store, name, alias)) or tmp_path)
    assert warm_start_source("production", Registry("s3://b/p", "tagsmith", "production")) == tmp_path
    assert calls == [("s3://b/p", "tagsmith", "production")]
