"""Every registered backbone builds at its smallest input (weights=None) and trains one step."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.model import build as M
from tasks.model.backbones import BACKBONES, build_base
from tasks.model.losses import make_loss


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_builds_at_min_size_and_trains_one_step(name):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    size = BACKBONES[name].min_size
    model = M.unfreeze(M.build_model(build_base(name, size), name, 3))
    M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-3, True, 1))
    # The step runs eagerly: tracing a big network's training step into a graph costs 3-6x the
    # step itself on 2 CPU cores (InceptionResNetV2: 53 s against 9 s) and is not what is checked
    # here; the same layers, loss, gradients and optimizer update run, with the same loss.
    model.run_eagerly = True
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    y = np.array([[1, 0, 0], [0, 1, 1]], "float32")
    base = model.get_layer("base").trainable_weights
    before = [keras.ops.convert_to_numpy(w).copy() for w in base]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, base))
    assert model.output_shape == (None, 3)


def test_backbone_below_its_min_size_is_refused():
    with pytest.raises(ValueError, match="inception_resnet_v2 needs image_size >= 75"):
        build_base("inception_resnet_v2", 64)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*small_cnn"):
        build_base("resnet9000", 64)


def test_config_lists_exactly_the_backbones_built():
    from typing import get_args

    from tasks.common.config import BackboneName
    from tasks.model.backbones import BACKBONES

    assert sorted(get_args(BackboneName)) == sorted(BACKBONES)
