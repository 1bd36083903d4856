"""The run form guides: parameters with a fixed set of values are choices, in the Prefect UI's
form (the flow's parameter schema) and in `tagsmith retrain --help`."""

from __future__ import annotations

import json
from typing import get_args

import pytest
from prefect.utilities.callables import parameter_schema

from flows.bridge.overrides import FLOW_PARAMS, flow_overrides
from flows.cli import build_parser
from flows.retrain import retrain
from tasks.common.config import BackboneName, ConfigError, LossName, ResizeMode, WeightsKind

CHOICES = {"backbone": BackboneName, "weights": WeightsKind, "loss": LossName, "resize": ResizeMode}


def _enum(prop: dict) -> list[str]:
    for option in prop.get("anyOf", [prop]):
        if "enum" in option:
            return option["enum"]
        if "$ref" in option:
            return []
    return []


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(json.dumps(parameter_schema(retrain.fn).model_dump_for_openapi()))


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_flow_form_offers_a_list(schema, name):
    prop = schema["properties"][name]
    definitions = schema.get("definitions", {})
    refs = [o["$ref"].split("/")[-1] for o in prop.get("anyOf", []) if "$ref" in o]
    values = _enum(prop) or [v for ref in refs for v in definitions[ref].get("enum", [])]
    assert sorted(values) == sorted(get_args(CHOICES[name]))
    assert prop.get("description"), f"{name}: the form shows no description"


def test_every_flow_parameter_has_a_description(schema):
    missing = [k for k, v in schema["properties"].items() if not v.get("description")]
    assert not missing


def test_flow_parameters_map_to_params_keys():
    assert flow_overrides({"loss": "asl", "backbone": None}) == {"train_frozen.loss": "asl", "train_full.loss": "asl"}
    assert set(FLOW_PARAMS) <= set(parameter_schema(retrain.fn).properties)


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_cli_lists_the_same_choices(name, capsys):
    retrain_parser = build_parser()._subparsers._group_actions[0].choices["retrain"]
    action = next(a for a in retrain_parser._actions if a.dest == name)
    assert action.help
    shown = action.choices or action.metavar.strip("{}").split(",")
    assert set(get_args(CHOICES[name])) <= set(shown)


def test_every_cli_option_says_what_it_does():
    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        silent = [a.dest for a in sub._actions if a.dest != "help" and not a.help]
        assert not silent, f"tagsmith {name}: options without help: {silent}"


def test_a_recipe_fills_the_options_not_given_and_validates_against_params(tmp_path):
    import shutil
    from pathlib import Path

    from flows.bridge.overrides import apply_overrides
    from flows.bridge.recipes import RECIPES, as_params
    from flows.cli import retrain_arguments

    args = build_parser().parse_args(["retrain", "--recipe", "efficientnet_lite0-imagenet", "--epochs-full", "0",
                                      "--set", "train_full.patience=2"])
    chosen, overrides = retrain_arguments(args)
    assert (chosen["backbone"], chosen["weights"], chosen["image_size"]) == ("efficientnet_lite0", "imagenet", 96)
    assert chosen["epochs_full"] == 0 and chosen["loss"] is None  # given wins; not in the recipe: params.yaml's
    assert overrides == {"train_frozen.batch_size": 32, "train_full.batch_size": 32,
                         "train_frozen.warm_start_fallback": "imagenet", "train_full.patience": 2}
    plain, _ = retrain_arguments(build_parser().parse_args(["retrain"]))
    assert set(plain.values()) == {None}
    for name in RECIPES:  # every recipe is valid params (each value checked by its section's model)
        params = tmp_path / name / "params.yaml"
        params.parent.mkdir()
        shutil.copy2(Path(__file__).resolve().parents[2] / "params.yaml", params)
        apply_overrides(params, as_params(name))  # raises ConfigError on a value its section refuses
    with pytest.raises(ConfigError):  # so the loop above can fail
        apply_overrides(params, {"train_frozen.backbone": "no_such_net"})


def test_params_yaml_is_the_default_recipe():
    """`make demo` trains what the recipe says (the accuracy benchmark and the sweep measure the recipe)."""
    from pathlib import Path

    from ruamel.yaml import YAML

    from flows.bridge.recipes import DEFAULT, as_params

    params = YAML(typ="safe").load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    for key, value in as_params(DEFAULT).items():
        section, name = key.split(".")
        assert params[section][name] == value, key
