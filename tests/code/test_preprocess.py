"""The one image preparation: the written-out resize gives Pillow's pixels, and a model folder's
recipe is read strictly (missing keys named, never guessed)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tasks.dataset import resample
from tasks.dataset.preprocess import Preprocess


@pytest.mark.parametrize("shape", [(80, 80), (48, 48), (1000, 999), (333, 517), (37, 100), (20, 30)])
@pytest.mark.parametrize("method", ["stretch", "pad"])
def test_resize_gives_pillows_bicubic_pixels(shape, method):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    if method == "stretch":
        expected = img.resize((64, 64), Image.Resampling.BICUBIC)
    else:
        expected = ImageOps.pad(img, (64, 64), method=Image.Resampling.BICUBIC, color=(0, 0, 0))
    np.testing.assert_array_equal(resample.resize_square(pixels, 64, method), np.asarray(expected))


def test_recipe_from_metadata_is_strict_and_reads_older_versions():
    full = Preprocess(64, "pad", 90).as_dict()
    assert Preprocess.from_metadata({"preprocess": full}, Path("m")) == Preprocess(64, "pad", 90)
    # versions published before train recorded the pixel format (always RGB 0..255)
    older = {"image_size": 64, "resize": "pad", "jpeg_quality": 90}
    assert Preprocess.from_metadata({"preprocess": older}, Path("m")) == Preprocess(64, "pad", 90)
    with pytest.raises(ValueError, match=r"^m: .*lacks \['image_size', 'resize', 'jpeg_quality'\]"):
        Preprocess.from_metadata({"image_size": 64}, Path("m"))
    with pytest.raises(ValueError, match="expects BGR"):
        Preprocess.from_metadata({"preprocess": {**full, "channel_order": "BGR"}}, Path("m"))
    with pytest.raises(ValueError, match=r"index.json lacks \['jpeg_quality'\]"):
        Preprocess.from_index({"image_size": 64, "resize": "pad"}, Path("s/index.json"))
