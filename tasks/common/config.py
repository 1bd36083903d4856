"""One config source: ``params.yaml``, a section per stage (plus ``registry``), validated at the edge.

Every stage reads only its own section, so a change invalidates only the stages that use it
(``dvc.yaml`` lists the same sections as params deps). Unknown keys and wrong types are errors
that name the file, the section and the key.

The defaults below are the reference study's recipe (ImageNet backbone, Adam 1e-5, 20 epochs,
batch 64, rotation 20 deg, shifts 20 %, flips). ``params.yaml`` overrides some of them so the
embedded demo finishes in minutes on a laptop CPU; each override there says why.

    python -m tasks.common.config            # print the resolved config of every stage
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.common.errors import TagsmithError

PARAMS_FILE = Path("params.yaml")

LossName = Literal["bce", "asl", "weighted_bce"]
# The backbones tasks/model/backbones.py builds (a test keeps the two lists equal): a Literal, so
# a typo fails at validation and the Prefect run form offers a list instead of free text.
BackboneName = Literal["small_cnn", "efficientnet_lite0", "efficientnet_lite2", "mobilenet_v3_small",
                       "efficientnet_v2_b0", "convnext_tiny", "resnet50", "resnet50_v2", "vgg16",
                       "inception_resnet_v2"]
# train_frozen.weights is one of these kinds or a path to a .keras / .weights.h5 file.
WeightsKind = Literal["imagenet", "none", "production"]
ResizeMode = Literal["stretch", "pad"]


class Section(BaseModel):
    """Base of every section: unknown keys and loose types are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IngestConfig(Section):
    source: Literal["manifest", "coco", "voc", "sliced"] = "manifest"  # sliced: tasks/datasource/slices.py
    root: str = "data"  # dataset root; no image path may leave it
    images: str = "images"  # image folder, relative to root
    labels: str = "labels.tsv"  # manifest: filename + labels (CSV or TSV)
    classes: str = "classes.txt"  # one class name per line, line number = class index
    label_format: Literal["auto", "index", "name"] = "auto"
    coco_annotations: str = "annotations/instances.json"
    coco_mapping: dict[str, str] | None = None  # COCO category name -> our class (many to one)
    coco_unmapped: Literal["drop", "keep_empty"] = "drop"  # images left with no mapped category
    voc_root: str = "VOC"
    voc_difficult: Literal["skip", "include"] = "skip"
    empty_labels: Literal["reject", "keep"] = "reject"  # images with no label at all
    test_list: str | None = None  # a user-provided test split (file of filenames); else carved
    # git-tracked split ledger (repo-relative): images listed there keep their split; None: no
    # ledger, every image is new (params.yaml sets one; dvc.yaml lists it as ingest's dep)
    splits_ledger: str | None = None
    # perceptual-hash bits within which images are near-duplicates and share a split (0: identical hash)
    near_duplicate_distance: int = Field(4, ge=0, le=12)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)  # share of what is left after test
    seed: int = 42
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)  # fail the run above this
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit
    max_side: int = 20_000  # absurd dimensions are rejected
    workers: int = Field(2, ge=1)  # processes decoding/hashing images (ingest is I/O + decode bound)


class AugmentPolicy(Section):
    """The augmentation policy: runs inside the model (on the device), off at inference.

    The one description of it: params.yaml's augment section, policy.json and the Keras layer
    (tasks/model/augmentation.py) all hold exactly these fields. Defaults: the study's policy.
    """

    rotation: float = Field(20.0, ge=0.0, le=180.0)  # degrees, +-
    translate: float = Field(0.2, ge=0.0, le=1.0)  # share of width/height, +-
    zoom: float = Field(0.0, ge=0.0, lt=1.0)  # +- share (isotropic)
    hflip: bool = True
    vflip: bool = True
    fill_mode: Literal["reflect", "nearest", "constant", "wrap"] = "nearest"  # constant: black
    brightness: float = Field(0.0, ge=0.0, le=1.0)  # +- share of 255, added
    contrast: float = Field(0.0, ge=0.0, le=1.0)  # +- share, scales around each image's mean

    @classmethod
    def only(cls, values: dict[str, Any]) -> AugmentPolicy:
        """A policy doing only the transforms ``values`` names (every other one off); unknown
        keys are an error, since a typo would otherwise silently switch a transform off."""
        off = {"rotation": 0.0, "translate": 0.0, "zoom": 0.0, "hflip": False, "vflip": False,
               "brightness": 0.0, "contrast": 0.0}
        try:
            return cls.model_validate({**off, **values})
        except ValidationError as e:
            raise ConfigError(f"augmentation policy: {e}") from None

    def of(self) -> dict[str, Any]:
        """The policy alone (policy.json's content), without any other fields of a subclass."""
        return {key: getattr(self, key) for key in AugmentPolicy.model_fields}


class AugmentConfig(AugmentPolicy):
    image_size: int = Field(256, ge=32)  # the study: 256x256
    resize: ResizeMode = "stretch"
    jpeg_quality: int = Field(95, ge=50, le=100)
    shard_mb: int = Field(150, ge=1)  # TFRecord shards of roughly this many MB
    workers: int = Field(2, ge=1)
    preview_images: int = Field(4, ge=1)
    preview_draws: int = Field(5, ge=1)




class TrainFrozenConfig(Section):
    backbone: BackboneName = "inception_resnet_v2"
    weights: str = "imagenet"  # imagenet | none | production | path to a .keras/.weights.h5 file
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-5, gt=0.0)
    decay: bool = True  # inverse-time decay equivalent to the old Keras `decay=lr/epochs`
    patience: int = Field(3, ge=0)  # early stopping on validation mAP, best weights restored
    loss: LossName = "bce"
    seed: int = 42
    deterministic: bool = True
    # weights: production warm-starts from the version this alias of the registry section points
    # at; None: the registry's own alias (the one publish moves)
    warm_start_alias: str | None = None
    # weights: production while the alias is still unset (the very first run of a nightly
    # schedule): start from these weights instead (imagenet | none | a file); None: refuse
    warm_start_fallback: str | None = None

    @field_validator("warm_start_fallback")
    @classmethod
    def _fallback_is_not_production(cls, v: str | None) -> str | None:
        if v == "production":
            raise ValueError("warm_start_fallback is what to start from when there is no production "
                             "model: imagenet, none or a weights file, not production")
        return v


class TrainFullConfig(Section):
    unfreeze_from: str | None = None  # name of the first layer to unfreeze; None = all
    # BatchNorm in phase 2: frozen (keras-io practice for pretrained bases), train, or auto =
    # train only when the base started from random weights (no statistics worth keeping)
    batchnorm: Literal["auto", "frozen", "train"] = "auto"
    epochs: int = Field(20, ge=0)  # 0: frozen only (the phase-1 model is the result)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-5, gt=0.0)
    decay: bool = True
    patience: int = Field(3, ge=0)
    loss: LossName = "bce"
    seed: int = 42
    deterministic: bool = True


class EvaluateConfig(Section):
    batch_size: int = Field(64, ge=1)
    default_threshold: float = Field(0.5, gt=0.0, lt=1.0)  # for classes absent from validation


class RegistryConfig(Section):
    """Where published versions live: the one registry section, read by every stage that reads
    or writes the registry (resolve_production, train_frozen's warm start, publish)."""

    store: str = "registry"  # a local folder, or s3://bucket/prefix
    model_name: str = "tagsmith"
    alias: str = "production"  # the alias publish moves and its gate compares with
    endpoint_url: str | None = None  # S3 endpoint; None: AWS_ENDPOINT_URL, else AWS
    s3_max_attempts: int = Field(5, ge=1)  # botocore retries with backoff (throttling, 5xx, network)
    multipart_threshold_mb: int = Field(64, ge=5)  # larger files go up in parallel multipart chunks


class MemoConfig(Section):
    """Where per-image and per-group results are memoized (tasks/dataset/memo.py). No stage lists
    this section as a param: the memo can only skip work, never change an output, so moving or
    disabling it must not make a stage stale. ``TAGSMITH_MEMO`` (a location, or ``off``) overrides."""

    enabled: bool = True
    location: str = ".cache/memo"  # a local folder, or s3://bucket/prefix shared by a worker pool
    endpoint_url: str | None = None  # S3 endpoint; None: AWS_ENDPOINT_URL, else AWS


class PublishConfig(Section):
    # The gate (tasks/evaluation/gate.py): candidate vs production on the same test images.
    max_map_drop: float = Field(0.01, ge=0.0, le=1.0)  # allowed mAP drop against production
    must_improve: bool = False  # also require a higher mAP
    max_p1_drop: float = Field(0.01, ge=0.0, le=1.0)  # allowed P@1 drop
    min_support: int = Field(20, ge=1)  # classes with at least this many test images get a per-class check
    max_class_drop: float = Field(0.05, ge=0.0, le=1.0)  # allowed AP drop of any such class
    bootstrap: bool = False  # also require the mAP rule at `confidence` (paired bootstrap over test images)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(1000, ge=100)
    bootstrap_seed: int = 0  # fixed: the same inputs give the same verdict
    alias_attempts: int = Field(3, ge=1, le=10)  # re-compare when production moved meanwhile, this often
    force: bool = False  # publish even if the gate says no (recorded as forced)
    batch_size: int = Field(64, ge=1)  # scoring production on the test shards for the gate


SECTIONS: dict[str, type[Section]] = {
    "ingest": IngestConfig,
    "augment": AugmentConfig,
    "train_frozen": TrainFrozenConfig,
    "train_full": TrainFullConfig,
    "evaluate": EvaluateConfig,
    "publish": PublishConfig,
    "registry": RegistryConfig,  # not a stage: the registry every stage that uses one shares
    "memo": MemoConfig,  # not a stage, and no stage's param: where ingest and augment memoize results
}

S = TypeVar("S", bound=Section)


class ConfigError(TagsmithError, ValueError):
    """A params file that does not validate; the message names file, section and key."""


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the raw params file; unknown sections are errors."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: params file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    return raw


def parse_section(name: str, values: dict[str, Any] | None, source: str = str(PARAMS_FILE)) -> Section:
    """Validate one section's values; errors name ``source``, the section and each bad key."""
    model = SECTIONS[name]
    try:
        return model.model_validate(values or {})
    except ValidationError as e:
        problems = "; ".join(
            f"{name}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else " (unknown key)")
            for err in e.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def load(section: type[S], path: Path = PARAMS_FILE) -> S:
    """Load and validate the section of ``path`` that ``section`` describes."""
    name = next(k for k, v in SECTIONS.items() if v is section)
    raw = read_params(path)
    cfg = parse_section(name, raw.get(name), str(path))
    assert isinstance(cfg, section)
    return cfg


def load_all(path: Path = PARAMS_FILE) -> dict[str, Section]:
    """Validate every section (used by the flow before it runs anything)."""
    raw = read_params(path)
    return {name: parse_section(name, raw.get(name), str(path)) for name in SECTIONS}


if __name__ == "__main__":
    try:
        print(json.dumps({k: v.model_dump() for k, v in load_all().items()}, indent=2))
    except ConfigError as e:
        sys.exit(f"error: {e}")
