"""Where the starting weights come from: ``imagenet`` | ``none`` | ``production`` | a file.

- ``imagenet``: the Keras cache (~/.keras/models, or $KERAS_HOME/models). The cache is checked
  first, so an offline machine gets an error naming the exact file and where to put it
  instead of a network attempt.
- a path: a tagsmith model folder or ``.keras`` file (warm start, see below), or a headless
  ``.h5`` / ``.weights.h5`` file of the base (keras.applications "notop" layout).
- ``production``: warm start from the model the registry's alias points at
  (tasks/registry/client.py ``resolve_model_dir``), pinned to the version resolve_production
  resolved it to, so the stage's DVC fingerprint names the model it really started from.
- ``none``: random initialisation.

A warm start copies the base; the head is copied only when the class list is the same, else
it keeps its fresh initialisation (only the head is re-initialised). Used by tasks/train.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
from keras.src.backend.config import keras_home

from tasks.common.errors import TagsmithError

from tasks.model.backbones import build_base, get_backbone


# S3 registry downloads for warm starts: outside every DVC out, gitignored like the checkpoints.
REGISTRY_CACHE = Path(".tagsmith/registry-cache")


class WeightsError(TagsmithError, RuntimeError):
    """Starting weights that cannot be found or do not fit the model."""


@dataclass(frozen=True)
class Registry:
    """Which published model ``weights: production`` starts from."""

    store: str = "registry"
    model_name: str = "tagsmith"
    alias: str = "production"
    version: str | None = None  # the alias resolved by resolve_production: load exactly this one


def imagenet_cache_file(backbone: str) -> Path:
    """Path where Keras looks for the backbone's ImageNet "notop" weights."""
    spec = get_backbone(backbone)
    if spec.imagenet_file is None:
        raise WeightsError(f"backbone {backbone} has no ImageNet weights; use weights: none")
    # The same folder keras.utils.get_file uses ($KERAS_HOME, read when Keras is imported).
    return Path(keras_home()).expanduser() / "models" / spec.imagenet_file


def _missing_imagenet(backbone: str, path: Path) -> str:
    url = (get_backbone(backbone).weights_url or "") + path.name
    return (f"ImageNet weights for {backbone} not found: {path} is missing. This machine is "
            f"offline: download {url} elsewhere and copy it to {path} (or set KERAS_HOME), "
            f"or set train_frozen.weights to a local file or 'none'.")


def build_base_with_weights(backbone: str, image_size: int, weights: str) -> tuple[keras.Model, str]:
    """Build the base with ``imagenet`` or random weights (warm starts come later).

    Returns:
        (base model, origin string for metadata.json).
    """
    if weights != "imagenet":
        return build_base(backbone, image_size, None), "none"
    path = imagenet_cache_file(backbone)
    if not path.is_file():
        raise WeightsError(_missing_imagenet(backbone, path))
    try:
        base = build_base(backbone, image_size, "imagenet")
    except Exception as e:  # a corrupt cached file makes Keras try the network again
        raise WeightsError(f"{_missing_imagenet(backbone, path)} (loading failed: {e})") from e
    return base, f"imagenet:{path.name}"


def warm_start_source(weights: str, registry: Registry) -> Path | None:
    """The model folder/file a warm start reads, or None for imagenet/none."""
    if weights in ("imagenet", "none"):
        return None
    if weights == "production":
        try:
            from tasks.registry.client import resolve_model_dir
        except ImportError as e:
            raise WeightsError("weights: production needs tasks/registry/client.py") from e
        return Path(resolve_model_dir(registry.store, registry.model_name, registry.version or registry.alias,
                                      cache_dir=REGISTRY_CACHE))
    path = Path(weights)
    if not path.exists():
        raise WeightsError(f"weights: {weights}: no such file or folder (expected imagenet, none, "
                           f"production or a path to a model folder, .keras or .h5 file)")
    return path


def apply_warm_start(model: keras.Model, source: Path, backbone: str, classes: list[str]
                     ) -> str:
    """Copy weights from ``source`` into ``model``'s base (and head when the classes match).

    Args:
        model: the freshly built tagsmith model.
        source: model folder, .keras file, or headless .h5 base weights.
        backbone: this model's backbone (a warm start must use the same one).
        classes: this model's class list.
    Returns:
        A short description of what was copied, for metadata.json.
    """
    if source.suffix == ".h5":
        try:
            model.get_layer("base").load_weights(source)
        except Exception as e:
            raise WeightsError(f"{source}: does not fit the {backbone} base: {e}") from e
        return f"file:{source.name} (base)"
    from tasks.model.build import METADATA_FILE, MODEL_FILE, _register_layers

    folder = source if source.is_dir() else source.parent
    meta_path = folder / METADATA_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("backbone", backbone) != backbone:
        raise WeightsError(f"{source}: was trained with backbone {meta['backbone']}, "
                           f"this run uses {backbone}")
    _register_layers()
    src = keras.saving.load_model(source / MODEL_FILE if source.is_dir() else source, compile=False)
    try:
        model.get_layer("base").set_weights(src.get_layer("base").get_weights())
    except ValueError as e:
        raise WeightsError(f"{source}: base weights do not fit the {backbone} base: {e}") from e
    same = meta.get("classes") == classes
    if same:
        model.get_layer("head").set_weights(src.get_layer("head").get_weights())
    return f"warm:{folder.name} (base{' + head' if same else '; head re-initialised: classes changed'})"
