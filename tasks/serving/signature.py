"""The SavedModel for TF Serving, with a ``serving_bytes`` signature that takes image files.

``serving_default`` takes prepared pixels (uint8-valued [B, S, S, 3]); ``serving_bytes`` takes a
batch of encoded files (JPEG, PNG; GIF and BMP decode too) and prepares each one inside the
graph as tasks/dataset/preprocess.py does in Python, op for op:

- decode: JPEG with the accurate integer DCT (Pillow's libjpeg setting), turned upright by its
  EXIF orientation (read from the APP1 segment in graph ops); PNG as RGBA with
  transparency composited on white in Pillow's integer arithmetic (``alpha_composite``);
- resize: Pillow's BICUBIC in fixed point (tasks/dataset/resample.py, the same coefficients
  and the same 8-bit passes), ``stretch`` or ``pad``;
- JPEG round trip at the recorded quality, 4:2:0 (the encoder gives the same pixels as
  Pillow's), decoded as the shard reader decodes;

so a client sending files gets the scores ``tagsmith predict`` gives (a test holds them within
1e-4), EXIF orientation of JPEGs applied as open_rgb applies it. Not reproduced in the graph:
CMYK JPEGs, 16-bit PNGs, PNG EXIF and GIF transparency, which open_rgb converts and
TensorFlow's decoders do not in the same way.

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


def _bytes(data: tf.Tensor, pos: tf.Tensor, n: int) -> tf.Tensor:
    """``n`` bytes at ``pos``, fewer (or none) past the end: a malformed header never fails."""
    pos = tf.clip_by_value(tf.cast(pos, tf.int64), 0, tf.cast(tf.strings.length(data), tf.int64))
    return tf.strings.substr(data, pos, n)


def _uint(data: tf.Tensor, pos: tf.Tensor, n: int, little: tf.Tensor) -> tf.Tensor:
    """An n-byte unsigned integer at ``pos`` (0 past the end), little- or big-endian."""
    raw = tf.io.decode_raw(_bytes(data, pos, n), tf.uint8)
    raw = tf.cast(tf.pad(raw, [[0, n - tf.shape(raw)[0]]]), tf.int64)
    raw = tf.where(little, tf.reverse(raw, [0]), raw)
    return tf.reduce_sum(raw * tf.constant([256 ** (n - 1 - i) for i in range(n)], tf.int64))


def jpeg_orientation(data: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1..8) of a JPEG, 1 when it has none: walks the marker segments up
    to the image data, finds the APP1 "Exif" one and reads tag 0x0112 of its first IFD."""
    size = tf.cast(tf.strings.length(data), tf.int64)
    big = tf.constant(False)

    def cond(pos, orientation, done):
        return tf.logical_and(tf.logical_not(done), pos + 4 <= size)

    def body(pos, orientation, done):
        marker = _uint(data, pos, 2, big)
        length = _uint(data, pos + 2, 2, big)
        is_exif = tf.logical_and(marker == 0xFFE1,
                                 _bytes(data, pos + 4, 6) == b"Exif\x00\x00")
        def read_orientation():
            tiff = pos + 10
            little = _bytes(data, tiff, 2) == b"II"
            ifd = tiff + _uint(data, tiff + 4, 4, little)
            n = _uint(data, ifd, 2, little)
            entries = ifd + 2 + 12 * tf.range(tf.minimum(n, 512))
            tags = tf.map_fn(lambda e: _uint(data, e, 2, little), entries)
            values = tf.map_fn(lambda e: _uint(data, e + 8, 2, little), entries)
            found = tf.boolean_mask(values, tags == 0x0112)
            return tf.cond(tf.size(found) > 0, lambda: found[0], lambda: tf.constant(1, tf.int64))

        stop = tf.logical_or(is_exif, tf.logical_or(marker == 0xFFDA, (marker // 256) != 0xFF))
        orientation = tf.cond(is_exif, read_orientation, lambda: orientation)
        return pos + 2 + length, orientation, stop

    _, orientation, _ = tf.while_loop(cond, body, (tf.constant(2, tf.int64), tf.constant(1, tf.int64),
                                                   tf.constant(False)))
    return tf.where((orientation >= 1) & (orientation <= 8), orientation, 1)


def upright(pixels: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Apply an EXIF orientation as ``ImageOps.exif_transpose`` does."""
    t = lambda x: tf.transpose(x, [1, 0, 2])  # noqa: E731
    return tf.switch_case(tf.cast(orientation - 1, tf.int32), [
        lambda: pixels,
        lambda: tf.reverse(pixels, [1]),  # 2: mirror left-right
        lambda: tf.image.rot90(pixels, 2),  # 3: rotate 180
        lambda: tf.reverse(pixels, [0]),  # 4: mirror top-bottom
        lambda: t(pixels),  # 5: transpose
        lambda: tf.image.rot90(pixels, 3),  # 6: rotate 90 clockwise
        lambda: tf.image.rot90(t(pixels), 2),  # 7: transverse
        lambda: tf.image.rot90(pixels, 1),  # 8: rotate 90 counter-clockwise
    ])


def decode_rgb(data: tf.Tensor) -> tf.Tensor:
    """An encoded file (scalar string) -> uint8 [H, W, 3], as imageio.open_rgb decodes it."""
    head = tf.strings.substr(data, 0, 8)
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = head == b"\x89PNG\r\n\x1a\n"
    return tf.case([
        (is_jpeg, lambda: upright(tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                                  jpeg_orientation(data))),
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
