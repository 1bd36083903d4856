"""Per-run parameter overrides, written into ``params.yaml`` so DVC sees them too.

A flow parameter (backbone, image size, epochs, ...) must change what ``dvc repro`` would run
and be recorded with the outputs; the one place DVC reads parameters from is ``params.yaml``,
and ``dvc.lock`` then records the values each stage ran with (as ``dvc exp run --set-param``
does). Every value is validated by the stage's config model before anything is written, and
comments in the file are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tasks.common.config import SECTIONS, ConfigError, parse_section

# Flow parameter -> the params.yaml keys it sets; what the Prefect UI's run form shows by name.
FLOW_PARAMS: dict[str, tuple[str, ...]] = {
    "backbone": ("train_frozen.backbone",),
    "weights": ("train_frozen.weights",),
    "image_size": ("augment.image_size",),
    "resize": ("augment.resize",),
    "epochs_frozen": ("train_frozen.epochs",),
    "epochs_full": ("train_full.epochs",),
    "lr_frozen": ("train_frozen.learning_rate",),
    "lr_full": ("train_full.learning_rate",),
    "loss": ("train_frozen.loss", "train_full.loss"),
    "force_publish": ("publish.force",),
}


def flow_overrides(chosen: dict[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` for the flow parameters that were given (not None)."""
    return {key: value for name, value in chosen.items() if value is not None
            for key in FLOW_PARAMS[name]}


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Parse ``section.key=value`` strings (value as YAML: ``3``, ``1.0e-4``, ``true``, ``null``)."""
    yaml = YAML(typ="safe")
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        out[key.strip()] = yaml.load(raw) if raw.strip() else None
    return out


def apply_overrides(params_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Validate ``{"section.key": value}`` and write the changed values into ``params_file``.

    Returns:
        The overrides that changed a value (``{"section.key": [old, new]}``); nothing is
        written when none did or when any value is invalid.

    Raises:
        ConfigError: unknown section or key, or a value of the wrong type (names the key).
    """
    if not overrides:
        return {}
    rt = YAML()  # round-trip: keeps comments and key order
    rt.preserve_quotes = True
    # keep `null` spelled out (ruamel writes an empty value by default)
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    doc = rt.load(params_file.read_text())
    changed: dict[str, Any] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"override {dotted!r}: unknown section {section!r}; known: {sorted(SECTIONS)}")
        block = doc.setdefault(section, {})
        old = block.get(key)
        if old != value or key not in block:
            block[key] = value
            changed[dotted] = [old, value]
    for section in {d.partition(".")[0] for d in overrides}:
        parse_section(section, dict(doc[section]), f"{params_file} (with overrides)")
    if changed:
        with params_file.open("w") as fh:
            rt.dump(doc, fh)
    return changed
