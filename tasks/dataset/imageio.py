"""Image I/O shared by ingest and augment: one place that decides what a usable image is.

``open_rgb`` is the only way the pipeline reads a picture: it checks the header's dimensions
before decoding (decompression bombs), decodes fully (truncation shows only then), applies the
EXIF orientation and converts every mode to 8-bit RGB, so a CMYK scan, a 16-bit grayscale PNG
or a transparent logo all reach the model the same way. Faults are ``ImageFault`` with a short
machine-readable ``reason`` that ingest writes to ``quarantine.csv``.

Library only; no command line.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tasks.common.errors import DataError
from tasks.dataset import resample

# Signatures of formats Pillow could read: a file that starts like one but does not open is a
# broken image ("undecodable"); anything else is a non-image with an image name ("not_an_image").
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a fault, never half an image


class ImageFault(DataError):
    """An image that cannot be used.

    Args:
        reason: short machine-readable cause, e.g. ``"truncated"`` (goes into quarantine.csv).
        message: what a person needs to know, naming the file.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def resolve_under(root: Path, rel: str, cache: dict[str, str] | None = None) -> Path:
    """Resolve a manifest path inside ``root``, refusing anything that leaves it.

    Absolute paths, ``..`` components and symlinks that point outside the root are all
    rejected, even when the target exists: the dataset is what lives under the root.

    Args:
        root: the dataset root.
        rel: the path as written in the source (relative to ``root``).
        cache: optional dict reused across calls of one run: folders are resolved once
            (thousands of images share a few parents; realpath costs a syscall per component).

    Returns:
        The resolved absolute path (it may not exist; ``open_rgb`` reports that).

    Raises:
        ImageFault: reason ``"path_escapes_root"``.
    """
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", rel):
        raise ImageFault("path_escapes_root", f"{rel!r} is absolute or empty; paths must be relative to the root")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise ImageFault("path_escapes_root", f"{rel!r} contains '..'")
    cache = {} if cache is None else cache
    real = lambda p: cache[p] if p in cache else cache.setdefault(p, os.path.realpath(p))  # noqa: E731
    root_real = real(str(root))
    folder, name = os.path.split(os.path.join(root_real, rel))
    target = os.path.join(real(folder), name)
    if os.path.islink(target):
        target = os.path.realpath(target)
    if target != root_real and not target.startswith(root_real.rstrip(os.sep) + os.sep):
        raise ImageFault("path_escapes_root", f"{rel!r} resolves outside the dataset root (symlink?)")
    return Path(target)


def _check_file(path: Path) -> None:
    """Cheap checks before Pillow sees the file: missing, not a file, empty."""
    if not path.exists():
        raise ImageFault("missing", f"{path} does not exist")
    if not path.is_file():
        raise ImageFault("not_a_file", f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise ImageFault("zero_byte", f"{path} is empty (0 bytes)")


def _open_checked(path: Path | str, max_pixels: int, max_side: int, data: bytes | None = None) -> Image.Image:
    """Open the header only and check its dimensions before any pixel is decoded (``data``:
    the file's bytes, then ``path`` only names it in messages)."""
    try:
        with warnings.catch_warnings():
            # We apply our own limits below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path if data is None else io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageFault("decompression_bomb", f"{path}: {e}") from None
    except UnidentifiedImageError:
        if data is None:
            with open(path, "rb") as f:
                head = f.read(8)
        else:
            head = data[:8]
        if head.startswith(_MAGIC):
            raise ImageFault("undecodable", f"{path} looks like an image but Pillow cannot read it") from None
        raise ImageFault("not_an_image", f"{path} is not an image file (starts with {head[:4]!r})") from None
    except PermissionError as e:
        raise ImageFault("unreadable", f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow reads part of the body while opening, so truncation can surface here already.
        reason = "truncated" if "truncat" in str(e).lower() else "undecodable"
        raise ImageFault(reason, f"{path}: {e}") from None
    w, h = img.size
    if w <= 0 or h <= 0 or max(w, h) > max_side:
        img.close()
        raise ImageFault("absurd_dimensions", f"{path} is {w}x{h}; allowed: 1..{max_side} px per side")
    if w * h > max_pixels:
        img.close()
        raise ImageFault("decompression_bomb", f"{path} is {w}x{h} = {w * h} px > max_pixels {max_pixels}")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (transparency composited on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit data (the usual case for I/I;16) is scaled; already-8-bit ranges are kept.
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, L, 1, P, YCbCr, LAB, HSV


def open_rgb(path: Path, *, max_pixels: int = 89_478_485, max_side: int = 20_000) -> Image.Image:
    """Open, validate and fully decode an image as 8-bit RGB with EXIF orientation applied.

    Args:
        path: the image file.
        max_pixels: width*height above this is a decompression bomb (checked before decoding).
        max_side: either side above this is absurd.

    Returns:
        A loaded ``RGB`` image, upright, with no reference to the file left open.

    Raises:
        ImageFault: reasons ``missing``, ``not_a_file``, ``zero_byte``, ``unreadable``,
            ``not_an_image``, ``undecodable``, ``truncated``, ``decompression_bomb``,
            ``absurd_dimensions``.
    """
    path = Path(path)
    _check_file(path)
    return _decode_rgb(_open_checked(path, max_pixels, max_side), path)


def open_rgb_bytes(data: bytes, *, max_pixels: int = 89_478_485, max_side: int = 20_000,
                   name: str = "<bytes>") -> Image.Image:
    """``open_rgb`` for a file's bytes (``name`` stands for the file in messages)."""
    if not data:
        raise ImageFault("zero_byte", f"{name} is empty (0 bytes)")
    return _decode_rgb(_open_checked(name, max_pixels, max_side, data), name)


def _decode_rgb(img: Image.Image, path: Path | str) -> Image.Image:
    """Fully decode an opened image as upright 8-bit RGB (``open_rgb``'s second half)."""
    try:
        with img:
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - broken EXIF is metadata, not pixels: keep as stored
                upright = img
            out = _to_rgb(upright)
            if out is img:
                out = img.copy()
    except ImageFault:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e).lower() or "premature" in str(e).lower() else "undecodable"
        raise ImageFault(reason, f"{path}: {e}") from None
    except Image.DecompressionBombError as e:
        raise ImageFault("decompression_bomb", f"{path}: {e}") from None
    return out


def resize(img: Image.Image, size: int, method: Literal["stretch", "pad"]) -> Image.Image:
    """Resize to ``size`` x ``size`` with Pillow's BICUBIC (``tasks.dataset.resample``, the code
    the serving graph reproduces).

    Args:
        img: an RGB image.
        size: output side in pixels.
        method: ``"stretch"`` ignores the aspect ratio (the study's choice); ``"pad"`` keeps it
            and centres the image on a black square.

    Returns:
        A new ``size`` x ``size`` RGB image.
    """
    return Image.fromarray(resample.resize_square(np.asarray(img.convert("RGB")), size, method), mode="RGB")


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """Encode as baseline JPEG without any metadata, so equal pixels give equal bytes.

    Args:
        img: an image (converted to RGB if needed).
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    # A fresh image from raw pixels carries no EXIF/ICC/comment that the encoder could copy.
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()
