"""Named training recipes: the flow parameters (and params.yaml values) one setup trains with.

One definition serves every caller that trains the setup: ``tagsmith retrain --recipe NAME``
(``make demo-scratch``), the sweep's ``transfer`` grid (flows/sweep.py) and the accuracy
benchmark (benchmarks/accuracy.py), so the figures the benchmark reports are the recipe the
demo and the sweep run. Keys are the retrain flow's parameter names (FLOW_PARAMS);
``params`` holds any other params.yaml values as ``{"section.key": value}``.
"""

from __future__ import annotations

from typing import Any

from flows.bridge.overrides import flow_overrides

RECIPES: dict[str, dict[str, Any]] = {
    # EfficientNet-Lite0 from ImageNet on the embedded data (80 px images, upsampled to 96), on a
    # CPU: the frozen phase (no gradients through the base, cheap) does most of the work, then
    # a few epochs fine-tune everything at a low rate (BatchNorm stays frozen: pretrained).
    # params.yaml holds these values: it is `make demo` (a test keeps the two equal).
    "efficientnet_lite0-imagenet": {
        "backbone": "efficientnet_lite0", "weights": "imagenet", "image_size": 96,
        "epochs_frozen": 8, "lr_frozen": 1.0e-3, "epochs_full": 2, "lr_full": 1.0e-4,
        "params": {"train_frozen.batch_size": 32, "train_full.batch_size": 32,
                   "train_frozen.warm_start_fallback": "imagenet"}},
    # The small CNN from scratch (`make demo-scratch`, the test suite's pipelines): a head over a
    # random base learns next to nothing, so one frozen epoch, then 30 epochs train everything at
    # a high rate (BatchNorm trains: nothing pretrained to keep).
    "small_cnn-scratch": {
        "backbone": "small_cnn", "weights": "none", "image_size": 64,
        "epochs_frozen": 1, "lr_frozen": 1.0e-3, "epochs_full": 30, "lr_full": 3.0e-3,
        "params": {"train_frozen.batch_size": 64, "train_full.batch_size": 32,
                   "train_frozen.warm_start_fallback": "none"}},
}
DEFAULT = "efficientnet_lite0-imagenet"  # what params.yaml (and so `make demo`) trains


def recipe(name: str) -> dict[str, Any]:
    """A copy of recipe ``name`` (ValueError naming the known ones if there is none)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    r = RECIPES[name]
    return {**r, "params": dict(r.get("params", {}))}


def as_params(name: str) -> dict[str, Any]:
    """Recipe ``name`` as params.yaml values, ``{"section.key": value}``."""
    r = recipe(name)
    extra = r.pop("params")
    return {**flow_overrides(r), **extra}
