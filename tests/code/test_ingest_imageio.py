"""open_rgb converts what can be converted and names what cannot; resize and encode_jpeg."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tasks.dataset.imageio import ImageFault, encode_jpeg, open_rgb, resize, resolve_under


def _save(tmp_path, img: Image.Image, name: str, **kw):
    img.save(tmp_path / name, **kw)
    return tmp_path / name


@pytest.mark.parametrize("img,name,pixel", [
    (Image.new("CMYK", (8, 6), (0, 0, 0, 0)), "cmyk.jpg", (255, 255, 255)),
    (Image.new("L", (8, 6), 100), "gray.png", (100, 100, 100)),
    (Image.new("P", (8, 6), 0), "palette.png", (0, 0, 0)),
    (Image.new("RGBA", (8, 6), (255, 0, 0, 0)), "clear.png", (255, 255, 255)),  # composited on white
    (Image.new("LA", (8, 6), (0, 255)), "la.png", (0, 0, 0)),
    (Image.fromarray(np.full((6, 8), 65535, np.uint16)), "deep.png", (255, 255, 255)),  # 16-bit -> 8-bit
])
def test_every_mode_becomes_8_bit_rgb(tmp_path, img, name, pixel):
    out = open_rgb(_save(tmp_path, img, name))
    assert out.mode == "RGB" and out.size == (8, 6)
    assert all(abs(a - b) <= 2 for a, b in zip(out.getpixel((0, 0)), pixel))


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    assert open_rgb(_save(tmp_path, img, "rot.jpg", exif=exif)).size == (20, 40)


def test_dimensions_are_checked_before_decoding(tmp_path):
    path = _save(tmp_path, Image.new("1", (3000, 3000)), "big.png")
    with pytest.raises(ImageFault) as e:
        open_rgb(path, max_pixels=1_000_000)
    assert e.value.reason == "decompression_bomb" and "big.png" in e.value.message


def test_path_escapes_are_rejected(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path, tmp_path / "root" / "up")
    for rel in ("/etc/passwd", "../x.jpg", "a/../../x.jpg", "up/x.jpg", ""):
        with pytest.raises(ImageFault, match="path_escapes_root"):
            resolve_under(tmp_path / "root", rel)
    assert resolve_under(tmp_path / "root", "a/b.jpg") == (tmp_path / "root" / "a" / "b.jpg").resolve()


def test_resize_stretch_and_pad(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 200, 200))
    assert resize(img, 16, "stretch").getpixel((8, 0)) == (200, 200, 200)
    padded = resize(img, 16, "pad")
    assert padded.size == (16, 16) and padded.getpixel((8, 0)) == (0, 0, 0) and padded.getpixel((8, 8)) == (200, 200, 200)


def test_encode_jpeg_is_deterministic_and_drops_metadata():
    img = Image.new("RGB", (16, 16), (10, 120, 30))
    img.info["exif"] = b"Exif\x00\x00junk"
    data = encode_jpeg(img, 90)
    assert data == encode_jpeg(img.copy(), 90)
    assert b"Exif" not in data and Image.open(io.BytesIO(data)).mode == "RGB"
