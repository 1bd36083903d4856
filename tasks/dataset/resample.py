"""Pillow's BICUBIC resize, written out so NumPy (augment, predict) and TensorFlow (the serving
graph, tasks/serving/signature.py) compute the same pixels.

Why not call Pillow: the SavedModel's ``serving_bytes`` signature must prepare images inside
the graph, and ``tf.image.resize`` differs from Pillow by several grey levels; Pillow itself
picks the order of its two passes by rules of its own (Pillow 13 sometimes runs the vertical
pass first), which a graph cannot follow. So both paths use this one algorithm: Pillow's
``Resample.c`` for 8-bit images (bicubic a = -0.5, the kernel widened by the downscale factor,
coefficients normalised per output pixel and rounded to 22-bit fixed point, horizontal pass
first into an 8-bit intermediate, then vertical). It gives Pillow's bytes wherever Pillow runs
the horizontal pass first (every square input, so the demo's shards are unchanged).

The pixel sums are integer arithmetic, exact whatever the order of the additions; the
coefficients are computed tap by tap in the C code's order in both implementations.

Library only; no command line.
"""

from __future__ import annotations

import functools

import numpy as np

PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
SUPPORT = 2.0  # bicubic
A = -0.5
SMALL = 1 << 22  # gathered values up to which a pass is done in one step (16 MB of int32)


def bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's ``bicubic_filter`` (Keys, a = -0.5), elementwise on float64."""
    x = np.abs(x)
    near = ((A + 2.0) * x - (A + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * A
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)  # a dataset has few distinct sizes: computed once per pair
def coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis (read-only arrays).

    Returns:
        (first input index per output pixel [out] int, fixed-point taps [out, ksize] int32;
        taps past the input's end are 0).
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    inv = 1.0 / filterscale
    taps = np.zeros((out_size, ksize))
    ww = np.zeros(out_size)
    for x in range(ksize):  # tap by tap, as the C loop sums them
        w = np.where(x < xmax, bicubic(((x + xmin) - center + 0.5) * inv), 0.0)
        taps[:, x] = w
        ww = ww + w
    taps = np.where(ww[:, None] != 0.0, taps / np.where(ww == 0.0, 1.0, ww)[:, None], taps)
    scaled = taps * float(1 << PRECISION_BITS)
    fixed = np.where(taps < 0, np.ceil(-0.5 + scaled), np.floor(0.5 + scaled)).astype(np.int32)
    xmin.flags.writeable = fixed.flags.writeable = False
    return xmin, fixed


def _pass(img: np.ndarray, out_size: int) -> np.ndarray:
    """One 8-bit pass along axis 0 of a uint8 [in, ...] array (rows gathered whole: fast).

    int32 accumulation, as Pillow's: the taps sum to 2**22 and the pixels are below 2**8."""
    in_size = img.shape[0]
    xmin, taps = coefficients(in_size, out_size)
    flat = img.reshape(in_size, -1)
    idx = np.minimum(xmin[:, None] + np.arange(taps.shape[1]), in_size - 1)  # a tap past the end has weight 0
    acc = np.full((out_size, flat.shape[1]), 1 << (PRECISION_BITS - 1), np.int32)
    if idx.size * flat.shape[1] <= SMALL:
        acc += np.einsum("ok,okr->or", taps, flat[idx].astype(np.int32))
    else:  # tap by tap: memory stays that of one output
        for x in range(taps.shape[1]):
            acc += taps[:, x, None] * flat[idx[:, x]].astype(np.int32)
    out = np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)
    return out.reshape((out_size,) + img.shape[1:])


def resize(pixels: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize uint8 [H, W, C] to [out_h, out_w, C] as Pillow's BICUBIC, horizontal pass first."""
    x = np.asarray(pixels, np.uint8)
    if x.shape[1] != out_w:
        x = np.ascontiguousarray(_pass(np.ascontiguousarray(x.transpose(1, 0, 2)), out_w).transpose(1, 0, 2))
    if x.shape[0] != out_h:
        x = _pass(x, out_h)
    return x


def pad_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """Where ``ImageOps.pad(img, (size, size))`` puts the image: (new_w, new_h, left, top).

    The longer side becomes ``size``; the other is ``round(short / long * size)`` (Python's
    round, half to even, as Pillow computes it, at least 1) and is centred on the square.
    """
    if width == height:
        return size, size, 0, 0
    if width > height:
        new_h = max(1, round(height / width * size))
        return size, new_h, 0, round((size - new_h) * 0.5)
    new_w = max(1, round(width / height * size))
    return new_w, size, round((size - new_w) * 0.5), 0


def resize_square(pixels: np.ndarray, size: int, method: str) -> np.ndarray:
    """uint8 [H, W, 3] -> [size, size, 3]: ``stretch`` ignores the aspect ratio, ``pad`` keeps it
    and centres the image on black (``ImageOps.pad``)."""
    if method == "stretch":
        return resize(pixels, size, size)
    if method != "pad":
        raise ValueError(f"unknown resize method {method!r}; expected 'stretch' or 'pad'")
    h, w = pixels.shape[:2]
    new_w, new_h, left, top = pad_geometry(w, h, size)
    out = np.zeros((size, size, pixels.shape[2]), np.uint8)
    out[top:top + new_h, left:left + new_w] = resize(pixels, new_h, new_w)
    return out
