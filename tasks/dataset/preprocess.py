"""How an image file becomes model input: the one preparation augment, predict and the serving
graph share.

    file (path or bytes) -> open_rgb (validate, EXIF upright, 8-bit RGB)
      -> resize to image_size (``stretch`` | ``pad``, Pillow BICUBIC: tasks/dataset/resample.py)
      -> JPEG at jpeg_quality (what a shard stores: ``encode``)
      -> decoded by TensorFlow as the shard reader decodes it (``decode``)
      -> uint8 [S, S, 3], RGB, 0..255 (the model casts and normalises inside itself)

The parameters travel as ``Preprocess``: augment writes them into index.json, train copies them
into the model's metadata.json under ``preprocess``, predict and the SavedModel export read
them from there. tasks/serving/signature.py is the same recipe in TensorFlow ops.

Library only; no command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.common.errors import DataError
from tasks.dataset import imageio

CHANNEL_ORDER = "RGB"
VALUE_RANGE = (0, 255)
KEYS = ("image_size", "resize", "jpeg_quality", "channel_order", "value_range")
RECIPE_KEYS = KEYS[:3]  # what a folder must record; the pixel format has only ever been RGB 0..255


@dataclass(frozen=True)
class Preprocess:
    """The recipe's parameters, as recorded in metadata.json's ``preprocess``."""

    image_size: int
    resize: Literal["stretch", "pad"]
    jpeg_quality: int
    channel_order: str = CHANNEL_ORDER
    value_range: tuple[int, int] = VALUE_RANGE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``value_range`` as a list)."""
        return {**asdict(self), "value_range": list(self.value_range)}

    @classmethod
    def from_index(cls, index: dict[str, Any], where: Path) -> Preprocess:
        """The recipe augment used, from its index.json.

        Raises:
            ValueError: the index does not say (written before it recorded the recipe),
                naming the file and the missing keys.
        """
        missing = [k for k in ("image_size", "resize", "jpeg_quality") if k not in index]
        if missing:
            raise DataError(f"{where}: index.json lacks {missing}, so how its images were prepared "
                             "is unknown; run `python -m tasks.augment` again")
        return cls(int(index["image_size"]), index["resize"], int(index["jpeg_quality"]))

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], model_dir: Path) -> Preprocess:
        """The recipe a model folder was trained with.

        Raises:
            ValueError: metadata.json has no complete ``preprocess`` entry, naming the folder
                and the missing keys (no guessing: a wrong resize gives wrong pixels silently).
        """
        pre = meta.get("preprocess")
        missing = list(RECIPE_KEYS) if not isinstance(pre, dict) else [k for k in RECIPE_KEYS if k not in pre]
        if missing:
            raise DataError(f"{model_dir}: metadata.json's 'preprocess' lacks {missing}; this folder "
                             "does not say how to prepare images (retrain it with this version of "
                             "tasks.train, which records them)")
        # Versions published before train recorded the pixel format lack these two keys; every
        # tagsmith model has taken RGB 0..255, so their absence is not a question.
        order, value_range = pre.get("channel_order", CHANNEL_ORDER), tuple(pre.get("value_range", VALUE_RANGE))
        if order != CHANNEL_ORDER or value_range != VALUE_RANGE:
            raise DataError(f"{model_dir}: preprocess expects {order} {list(value_range)}; "
                             f"this code prepares {CHANNEL_ORDER} {list(VALUE_RANGE)}")
        return cls(int(pre["image_size"]), pre["resize"], int(pre["jpeg_quality"]))


def encode(source: Path | bytes, spec: Preprocess, *, max_pixels: int = 89_478_485,
           max_side: int = 20_000) -> bytes:
    """An image file as a shard stores it: validated, upright RGB, resized, JPEG-encoded.

    Args:
        source: a path, or the file's bytes.
        spec: the recipe.
        max_pixels, max_side: image-size limits (``imageio.open_rgb``).

    Raises:
        imageio.ImageFault: the file is not a usable image.
    """
    if isinstance(source, (bytes, bytearray)):
        img = imageio.open_rgb_bytes(bytes(source), max_pixels=max_pixels, max_side=max_side)
    else:
        img = imageio.open_rgb(Path(source), max_pixels=max_pixels, max_side=max_side)
    return imageio.encode_jpeg(imageio.resize(img, spec.image_size, spec.resize), spec.jpeg_quality)


def decode(jpeg):
    """A stored JPEG (bytes or a scalar string tensor) -> uint8 [S, S, 3] tensor, decoded as the
    shard reader and the serving graph decode it (TensorFlow's decoder, its default DCT)."""
    import tensorflow as tf

    return tf.io.decode_jpeg(jpeg, channels=3)


def model_input(source: Path | bytes, spec: Preprocess) -> np.ndarray:
    """An image file as the model saw its shards: uint8 [S, S, 3], RGB, 0..255.

    Raises:
        imageio.ImageFault: the file is not a usable image.
    """
    return np.asarray(decode(encode(source, spec)))

