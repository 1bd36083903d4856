"""Phase 1 trains only the head with BatchNorm in inference mode; phase 2 trains the base."""

from __future__ import annotations

import keras
import numpy as np

from tasks.model import build as M
from tasks.model.backbones import build_base
from tasks.model.losses import make_loss


def _weights(layer):
    return [w.copy() for w in layer.get_weights()]


def _changed(before, layer):
    return any(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights()))


def _phase1(seed=0):
    keras.utils.set_random_seed(seed)
    model = M.build_model(build_base("small_cnn", 32), "small_cnn", 4, dropout=0.0)
    M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-2, True, 3))
    return model


def test_phase1_trains_only_the_head_and_keeps_batchnorm_statistics(tiny_arrays):
    x, y = tiny_arrays
    model = _phase1()
    base, head = model.get_layer("base"), model.get_layer("head")
    base_before, head_before = _weights(base), _weights(head)  # includes BN moving stats
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not _changed(base_before, base)
    assert _changed(head_before, head)
    # inference-mode BatchNorm: with dropout 0 and no augmentation, training=True == False
    np.testing.assert_allclose(model(x[:4], training=True), model(x[:4], training=False), atol=1e-6)


def test_phase2_trains_the_base_with_batchnorm_frozen(tiny_arrays):
    x, y = tiny_arrays
    model = M.unfreeze(_phase1(), train_batchnorm=False)
    M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-3, True, 3))
    base = model.get_layer("base")
    conv, bn = base.get_layer("block1_conv"), base.get_layer("block1_bn")
    conv_before, bn_before = _weights(conv), _weights(bn)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _changed(conv_before, conv)
    assert not _changed(bn_before, bn)


def test_phase2_from_scratch_lets_batchnorm_learn(tiny_arrays):
    x, y = tiny_arrays
    model = M.unfreeze(_phase1(), train_batchnorm=True)
    M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-3, True, 3))
    bn = model.get_layer("base").get_layer("block1_bn")
    bn_before = _weights(bn)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _changed(bn_before, bn)


def test_unfreeze_from_a_named_layer_keeps_earlier_layers_frozen(tiny_arrays):
    x, y = tiny_arrays
    model = M.unfreeze(_phase1(), unfreeze_from="block3_conv")
    M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-3, True, 3))
    base = model.get_layer("base")
    early, late = base.get_layer("block2_conv"), base.get_layer("block3_conv")
    early_before, late_before = _weights(early), _weights(late)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not _changed(early_before, early)
    assert _changed(late_before, late)
