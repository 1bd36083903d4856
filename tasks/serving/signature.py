"""The SavedModel for TF Serving, with a ``serving_bytes`` signature that takes image files.

``serving_default`` takes prepared pixels (uint8-valued [B, S, S, 3]); ``serving_bytes`` takes a
batch of encoded files (JPEG, PNG; GIF and BMP decode too) and prepares each one inside the
graph as tasks/dataset/preprocess.py does in Python, op for op:

- decode: JPEG with the accurate integer DCT (Pillow's libjpeg setting); PNG as RGBA with
  transparency composited on white in Pillow's integer arithmetic (``alpha_composite``);
- resize: Pillow's BICUBIC in fixed point (tasks/dataset/resample.py, the same coefficients
  and the same 8-bit passes), ``stretch`` or ``pad``;
- JPEG round trip at the recorded quality, 4:2:0 (the encoder gives the same pixels as
  Pillow's), decoded as the shard reader decodes;

so a client sending files gets the scores ``tagsmith predict`` gives (a test holds them within
1e-4). Not reproduced in the graph: EXIF orientation (send upright images), CMYK JPEGs and
16-bit PNGs, which open_rgb converts and TensorFlow's decoders do not in the same way.

Library only; publish calls ``export``.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from tasks.dataset import resample
from tasks.dataset.preprocess import Preprocess, decode

BITS = resample.PRECISION_BITS


def _coefficients(in_size: tf.Tensor, out_size: tf.Tensor | int) -> tuple[tf.Tensor, tf.Tensor]:
    """resample.coefficients in TensorFlow ops: (first index [out] int32, taps [out, k] int32)."""
    in_f = tf.cast(in_size, tf.float64)
    scale = in_f / tf.cast(out_size, tf.float64)
    filterscale = tf.maximum(scale, 1.0)
    support = resample.SUPPORT * filterscale
    ksize = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
    center = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale
    xmin = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)
    xmax = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size) - xmin
    inv = 1.0 / filterscale

    def tap(x, ww, taps):  # tap by tap, summed in the C code's order
        pos = tf.cast(x + xmin, tf.float64) - center + 0.5
        t = tf.abs(pos * inv)
        near = ((resample.A + 2.0) * t - (resample.A + 3.0)) * t * t + 1
        far = (((t - 5) * t + 8) * t - 4) * resample.A
        w = tf.where(t < 1.0, near, tf.where(t < 2.0, far, tf.zeros_like(t)))
        w = tf.where(x < xmax, w, tf.zeros_like(w))
        return x + 1, ww + w, taps.write(x, w)

    _, ww, taps = tf.while_loop(lambda x, *_: x < ksize, tap, (
        tf.constant(0), tf.zeros([out_size], tf.float64), tf.TensorArray(tf.float64, size=ksize)))
    taps = tf.transpose(taps.stack())  # [out, k]
    taps = tf.where(ww[:, None] != 0.0, taps / tf.where(ww == 0.0, tf.ones_like(ww), ww)[:, None], taps)
    scaled = taps * float(1 << BITS)
    fixed = tf.where(taps < 0, tf.math.ceil(-0.5 + scaled), tf.math.floor(0.5 + scaled))
    return xmin, tf.cast(fixed, tf.int32)


def _pass(img: tf.Tensor, out_size: tf.Tensor | int) -> tf.Tensor:
    """One 8-bit pass along axis 0 of an int32 [in, rest] tensor (resample._pass)."""
    in_size = tf.shape(img)[0]
    xmin, taps = _coefficients(in_size, out_size)

    def tap(x, acc):
        idx = tf.minimum(xmin + x, in_size - 1)
        return x + 1, acc + taps[:, x, None] * tf.gather(img, idx)

    acc0 = tf.fill([out_size, tf.shape(img)[1]], tf.constant(1 << (BITS - 1), tf.int32))
    _, acc = tf.while_loop(lambda x, _: x < tf.shape(taps)[1], tap, (tf.constant(0), acc0))
    return tf.clip_by_value(tf.bitwise.right_shift(acc, BITS), 0, 255)


def resize(pixels: tf.Tensor, out_h: tf.Tensor | int, out_w: tf.Tensor | int, channels: int = 3) -> tf.Tensor:
    """resample.resize in TensorFlow: uint8 [H, W, C] -> uint8 [out_h, out_w, C]. A pass whose
    size does not change is the identity in fixed point, so both always run."""
    x = tf.cast(pixels, tf.int32)
    h, w = tf.shape(x)[0], tf.shape(x)[1]
    cols = tf.reshape(tf.transpose(x, [1, 0, 2]), [w, -1])  # [W, H*C]
    x = tf.transpose(tf.reshape(_pass(cols, out_w), [out_w, h, channels]), [1, 0, 2])
    x = tf.reshape(_pass(tf.reshape(x, [h, -1]), out_h), [out_h, out_w, channels])
    return tf.cast(x, tf.uint8)


def _round_half_even(x: tf.Tensor) -> tf.Tensor:
    """Python's round() on float64, as int32."""
    return tf.cast(tf.round(x), tf.int32)


def resize_square(pixels: tf.Tensor, size: int, method: str) -> tf.Tensor:
    """resample.resize_square in TensorFlow (``method`` is fixed when the graph is built)."""
    if method == "stretch":
        return resize(pixels, size, size)
    h, w = tf.shape(pixels)[0], tf.shape(pixels)[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    short_w = tf.maximum(1, _round_half_even(wf / hf * size))
    short_h = tf.maximum(1, _round_half_even(hf / wf * size))
    new_w = tf.where(w < h, short_w, size)
    new_h = tf.where(w > h, short_h, size)
    small = resize(pixels, new_h, new_w)
    top = _round_half_even(tf.cast(size - new_h, tf.float64) * 0.5)
    left = _round_half_even(tf.cast(size - new_w, tf.float64) * 0.5)
    return tf.pad(small, [[top, size - new_h - top], [left, size - new_w - left], [0, 0]])


def _on_white(rgba: tf.Tensor) -> tf.Tensor:
    """RGBA -> RGB composited on opaque white, in Pillow's ``alpha_composite`` integer steps."""
    x = tf.cast(rgba, tf.int32)
    rgb, a = x[..., :3], x[..., 3:]
    coef1 = a * 128  # a*255*255*2**7 / (255*255): exact
    coef2 = 255 * 128 - coef1
    t = rgb * coef1 + 255 * coef2 + (0x80 << 7)
    out = tf.bitwise.right_shift(tf.bitwise.right_shift(tf.bitwise.right_shift(t, 8) + t, 8), 7)
    return tf.cast(tf.where(a == 0, 255, out), tf.uint8)


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """An encoded file (scalar string) -> uint8 [H, W, 3], as imageio.open_rgb decodes it."""
    head = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    return tf.case([
        (is_jpeg, lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")),
        (is_png, lambda: _on_white(tf.io.decode_png(data, channels=4))),
    ], default=lambda: tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False),
                                       [None, None, 3]))


def prepare(data: tf.Tensor, spec: Preprocess) -> tf.Tensor:
    """One encoded file -> uint8 [S, S, 3]: preprocess.model_input inside the graph."""
    pixels = resize_square(decode_rgb(data), spec.image_size, spec.resize)
    jpeg = tf.io.encode_jpeg(pixels, quality=spec.jpeg_quality, chroma_downsampling=True)
    return tf.ensure_shape(decode(jpeg), [spec.image_size, spec.image_size, 3])


def export(model: keras.Model, spec: Preprocess, out: Path) -> None:
    """Write ``model`` as a SavedModel: ``serving_default`` as Keras exports it (pixels in,
    ``output_0`` scores out) plus ``serving_bytes`` (a batch of encoded files, input ``images``,
    output ``output_0`` [B, N])."""
    size = spec.image_size

    def from_bytes(images):
        pixels = tf.map_fn(lambda b: prepare(b, spec), images,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return model(tf.cast(pixels, tf.float32), training=False)

    archive = keras.export.ExportArchive()
    archive.track_and_add_endpoint("serve", model, [tf.TensorSpec([None, size, size, 3], tf.float32, name="image")])
    archive.add_endpoint("serving_bytes", from_bytes, [tf.TensorSpec([None], tf.string, name="images")])
    archive.write_out(str(Path(out)), verbose=False)
