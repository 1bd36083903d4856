"""Training objectives and in-training metrics for multi-label sigmoid outputs (keras.ops only).

Everything here runs inside the compiled train step on any Keras backend (TensorFlow, JAX).
The model outputs probabilities (sigmoid head), so the losses take probabilities too and clip
them away from 0 and 1 before the logs. Per-sample losses are the mean over classes, like
``keras.losses.BinaryCrossentropy``. Used by tasks/model/build.py and tasks/train.py; not a stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="tagsmith")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss (Ridnik et al., ICCV 2021) for many negatives per image.

    Positives: -(1-p)^gamma_pos log p. Negatives use a shifted probability
    p_m = max(p - clip, 0), so easy negatives (p < clip) are discarded outright, and are
    down-weighted by p_m^gamma_neg: -p_m^gamma_neg log(1 - p_m).
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 name: str = "asymmetric_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        p_m = ops.clip(p - self.clip, 0.0, 1.0 - _EPS) if self.clip > 0 else p
        pos = ops.power(1.0 - p, self.gamma_pos) * ops.log(p)
        neg = ops.power(p_m, self.gamma_neg) * ops.log(1.0 - p_m)
        return -ops.mean(y * pos + (1.0 - y) * neg, axis=-1)

    def get_config(self):
        return {"gamma_neg": self.gamma_neg, "gamma_pos": self.gamma_pos, "clip": self.clip,
                "name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="tagsmith")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """BCE with a weight per class on its positive term (rare classes count more)."""

    def __init__(self, pos_weights: Sequence[float], name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(w) for w in pos_weights]

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, y_pred.dtype)
        w = ops.convert_to_tensor(self.pos_weights, dtype=y_pred.dtype)
        p = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        return -ops.mean(w * y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p), axis=-1)

    def get_config(self):
        return {"pos_weights": self.pos_weights, "name": self.name, "reduction": self.reduction}


def positive_weights(label_counts: Sequence[float], n_images: int, max_weight: float = 100.0
                     ) -> list[float]:
    """Per-class positive weights n_neg / n_pos from train label frequencies.

    Args:
        label_counts: number of train images carrying each class.
        n_images: number of train images.
        max_weight: cap, so a class seen once does not dominate the loss.
    Returns:
        One weight per class, in [1, max_weight] (classes never seen get max_weight).
    """
    out = []
    for c in label_counts:
        w = (n_images - c) / c if c > 0 else max_weight
        out.append(float(min(max(w, 1.0), max_weight)))
    return out


def make_loss(name: str, pos_weights: Sequence[float] | None = None) -> keras.losses.Loss:
    """The loss named in params: ``bce`` | ``asl`` | ``weighted_bce`` (needs pos_weights)."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "asl":
        return AsymmetricLoss()
    if name == "weighted_bce":
        if pos_weights is None:
            raise ValueError("loss weighted_bce needs per-class positive weights")
        return WeightedBinaryCrossentropy(pos_weights)
    raise ValueError(f"unknown loss {name!r}; known: bce, asl, weighted_bce")


@keras.saving.register_keras_serializable(package="tagsmith")
class PrecisionAtOne(keras.metrics.Metric):
    """P@1: share of images whose top-scoring class is one of their true labels."""

    def __init__(self, name: str = "p_at_1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.hits = self.add_variable((), initializer="zeros", name="hits")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        top = ops.expand_dims(ops.argmax(y_pred, axis=-1), -1)
        hit = ops.squeeze(ops.take_along_axis(ops.cast(y_true, "float32"), top, axis=-1), -1)
        self.hits.assign_add(ops.sum(ops.cast(hit > 0.5, "float32")))
        self.count.assign_add(ops.cast(ops.shape(y_pred)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.hits, self.count)


def make_metrics(num_classes: int) -> list[keras.metrics.Metric]:
    """mAP estimate (mean over classes of PR-AUC, streaming) and P@1, as logged per epoch."""
    return [
        keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_classes, name="map"),
        PrecisionAtOne(),
    ]
