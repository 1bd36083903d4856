"""In-model image augmentation: one fused random affine per image, one resample.

Stacking ``RandomRotation``, ``RandomTranslation``, ``RandomZoom`` and ``RandomFlip``
resamples (and blurs) the image once per layer; here every geometric draw is composed into a
single 3x3 matrix per image and the batch is resampled once with
``keras.ops.image.affine_transform`` (bilinear). Optional brightness/contrast jitter follows.
Only ``keras.ops``/``keras.random`` are used, so the layer runs on the TensorFlow and the JAX
backends alike, and it is a registered serializable layer, so a ``.keras`` model containing
it saves and loads. It is the identity at inference (``training=False``, the default).

Library only; ``python -m tasks.augment`` writes ``policy.json`` and a preview with it.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from tasks.common.config import AugmentPolicy


@keras.saving.register_keras_serializable(package="tagsmith")
class FusedAffineAugment(keras.layers.Layer):
    """Random rotation + translation + zoom + flips as one affine, then brightness/contrast.

    The transform handed to ``affine_transform`` maps *output* pixel coordinates to *input*
    ones. We draw that inverse map directly: ``p_in = c + F R(theta) z (p_out - c - t)``
    with ``c`` the image centre ``((W-1)/2, (H-1)/2)`` (so rotation, zoom and flips are about
    the centre), ``t`` a shift in output pixels, ``F`` the flips. Every draw is symmetric
    around the identity, so the inverse has the same distribution as the forward policy.

    Args:
        seed: seed of the layer's ``SeedGenerator``; None draws one at random.
        **kwargs: the policy's fields (``tasks.common.config.AugmentPolicy``; a transform not
            named is off) and ``keras.layers.Layer`` arguments (name, dtype, ...).
    """

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in AugmentPolicy.model_fields}
        policy = AugmentPolicy.only(fields)
        super().__init__(**kwargs)
        self.policy = policy
        self.rotation, self.translate, self.zoom = policy.rotation, policy.translate, policy.zoom
        self.hflip, self.vflip, self.fill_mode = policy.hflip, policy.vflip, policy.fill_mode
        self.brightness, self.contrast = policy.brightness, policy.contrast
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def geometric(self) -> bool:
        """Whether any resampling is needed at all."""
        return bool(self.rotation or self.translate or self.zoom or self.hflip or self.vflip)

    def _uniform(self, n, low: float, high: float):
        return keras.random.uniform((n,), minval=low, maxval=high, seed=self.seed_generator)

    def _sign(self, n, enabled: bool):
        """-1 with probability 0.5 when ``enabled``, else +1."""
        if not enabled:
            return ops.ones((n,))
        return ops.where(self._uniform(n, 0.0, 1.0) < 0.5, -1.0, 1.0)

    def transforms(self, n, height: int, width: int):
        """Draw ``n`` output->input transforms in ``affine_transform``'s 8-vector form.

        Args:
            n: batch size (int or scalar tensor).
            height, width: image size in pixels.

        Returns:
            float32 ``[n, 8]``: ``[a0, a1, a2, b0, b1, b2, 0, 0]``.
        """
        zeros = ops.zeros((n,))
        theta = self._uniform(n, -1.0, 1.0) * (self.rotation * math.pi / 180.0) if self.rotation else zeros
        z = 1.0 + self._uniform(n, -self.zoom, self.zoom) if self.zoom else ops.ones((n,))
        tx = self._uniform(n, -1.0, 1.0) * (self.translate * width) if self.translate else zeros
        ty = self._uniform(n, -1.0, 1.0) * (self.translate * height) if self.translate else zeros
        fx, fy = self._sign(n, self.hflip), self._sign(n, self.vflip)
        cos, sin = ops.cos(theta), ops.sin(theta)
        # M = F @ R @ (z I): the linear part of the output->input map.
        m00, m01 = fx * cos * z, -fx * sin * z
        m10, m11 = fy * sin * z, fy * cos * z
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        # p_in = M p_out + c - M (c + t)
        a2 = cx - (m00 * (cx + tx) + m01 * (cy + ty))
        b2 = cy - (m10 * (cx + tx) + m11 * (cy + ty))
        return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)

    def call(self, inputs, training: bool = False):
        images = ops.cast(inputs, self.compute_dtype)
        if not training:
            return images
        shape = ops.shape(images)
        n, height, width = shape[0], shape[1], shape[2]
        if self.geometric:
            matrices = self.transforms(n, height, width)  # float32 whatever the compute dtype
            images = ops.image.affine_transform(
                images, matrices, interpolation="bilinear", fill_mode=self.fill_mode, fill_value=0.0,
                data_format="channels_last",
            )
        if self.brightness:
            delta = self._uniform(n, -self.brightness, self.brightness) * 255.0
            images = images + ops.cast(ops.reshape(delta, (-1, 1, 1, 1)), images.dtype)
        if self.contrast:
            factor = ops.reshape(self._uniform(n, 1.0 - self.contrast, 1.0 + self.contrast), (-1, 1, 1, 1))
            mean = ops.mean(images, axis=(1, 2), keepdims=True)
            images = (images - mean) * ops.cast(factor, images.dtype) + mean
        return ops.clip(images, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self.policy.of())
        config["seed"] = self.seed
        return config


def build_augmentation(policy: dict | AugmentPolicy, seed: int | None = None) -> keras.layers.Layer:
    """Build the in-model augmentation layer from a policy (``policy.json``'s content).

    Args:
        policy: an ``AugmentPolicy`` or a dict of its fields; a transform not named is off.
            Unknown keys are an error (a typo would otherwise silently switch a transform off).
        seed: seed for the random draws; None draws one at random.

    Returns:
        A ``FusedAffineAugment`` layer: float 0..255 ``[B,H,W,3]`` in and out.
    """
    values = policy.of() if isinstance(policy, AugmentPolicy) else dict(policy)
    return FusedAffineAugment(**AugmentPolicy.only(values).of(), seed=seed, name="augmentation")
