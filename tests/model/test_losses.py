"""Losses, the P@1 metric and the learning-rate schedule pin down their definitions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.model.losses import AsymmetricLoss, PrecisionAtOne, WeightedBinaryCrossentropy, make_loss, positive_weights
from tasks.model.build import make_optimizer

Y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], "float32")
P = np.array([[0.9, 0.2, 0.1], [0.7, 0.6, 0.3], [0.2, 0.1, 0.8]], "float32")


def _bce():
    return float(keras.losses.BinaryCrossentropy()(Y, P))


def test_asymmetric_loss_without_focusing_or_clip_is_bce():
    assert float(AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(Y, P)) == pytest.approx(_bce(), rel=1e-5)


def test_asymmetric_loss_discards_easy_negatives():
    # every negative has p <= clip + small: with clip 0.25 only positives (and 0.7, 0.3) remain
    full, clipped = AsymmetricLoss(clip=0.0)(Y, P), AsymmetricLoss(clip=0.25)(Y, P)
    assert float(clipped) < float(full)
    assert float(AsymmetricLoss()(Y, Y * 0.999 + 0.0005)) == pytest.approx(0.0, abs=1e-3)


def test_weighted_bce_with_unit_weights_is_bce_and_weights_raise_positive_terms():
    assert float(WeightedBinaryCrossentropy([1, 1, 1])(Y, P)) == pytest.approx(_bce(), rel=1e-5)
    assert float(WeightedBinaryCrossentropy([5, 5, 5])(Y, P)) > _bce()


def test_positive_weights_are_negatives_over_positives_capped():
    assert positive_weights([10, 50, 0], 100, max_weight=20) == [9.0, 1.0, 20.0]


def test_make_loss_refuses_weighted_bce_without_weights():
    with pytest.raises(ValueError, match="positive weights"):
        make_loss("weighted_bce")


def test_precision_at_one_counts_top_class_hits():
    m = PrecisionAtOne()
    m.update_state(Y, P)  # top classes 0 (hit), 0 (miss), 2 (hit)
    assert float(m.result()) == pytest.approx(2 / 3)


def test_decay_matches_old_keras_per_step_formula():
    lr, epochs = 1e-3, 4
    opt = make_optimizer(lr, True, epochs)
    for step in (0, 1, 10, 1000):
        opt.iterations.assign(step)
        old = lr / (1 + (lr / epochs) * step)  # old Keras: decay=lr/epochs, per iteration
        assert float(opt.learning_rate) == pytest.approx(old, rel=1e-6)
