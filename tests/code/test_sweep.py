"""The sweep's grid, its bounded fan-out, and the comparison table (no Prefect server needed)."""

from __future__ import annotations

import asyncio

from flows.sweep import (GRIDS, Cell, child_parameters, comparison, expand, _child_metrics,
                         run_bounded, setting, to_csv, to_markdown)


def test_study_grid_is_three_backbones_in_both_modes_at_1e5_and_256px():
    g = GRIDS["study"]
    cells = expand(g["backbones"], g["modes"], g["learning_rates"], g["image_sizes"])
    assert len(cells) == 6
    assert {c.backbone for c in cells} == {"vgg16", "resnet50_v2", "inception_resnet_v2"}
    assert {(c.learning_rate, c.image_size) for c in cells} == {(1e-5, 256)}
    assert [c.mode for c in cells] == ["frozen"] * 3 + ["frozen+full"] * 3  # frozen first: warms the cache


def test_frozen_only_cell_asks_retrain_for_no_fine_tuning_and_a_private_registry():
    frozen = child_parameters(Cell("vgg16", "frozen", 1e-5, 256), GRIDS["study"]["fixed"], {"augment.workers": 1})
    full = child_parameters(Cell("vgg16", "frozen+full", 1e-5, 256), GRIDS["study"]["fixed"], None)
    assert frozen["epochs_full"] == 0 and full["epochs_full"] == 20
    assert frozen["lr_frozen"] == frozen["lr_full"] == 1e-5
    assert frozen["params"]["augment.workers"] == 1
    assert frozen["params"]["registry.store"] != "registry" and full["params"]["registry.store"] != "registry"


def test_children_run_at_most_max_parallel_at_once_and_mode_after_mode():
    running, peak, order = 0, 0, []

    async def launch(cell: Cell) -> dict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(cell.mode)
        await asyncio.sleep(0.01)
        running -= 1
        return {"mode": cell.mode}

    cells = expand(["a", "b", "c", "d", "e"], ["frozen+full", "frozen"], [1e-3], [64])
    rows = asyncio.run(run_bounded(cells, launch, max_parallel=2))
    assert peak == 2
    assert order == ["frozen"] * 5 + ["frozen+full"] * 5
    assert len(rows) == 10


def test_comparison_has_a_row_per_backbone_and_p1_map_per_mode():
    rows = [
        {"backbone": "vgg16", "mode": "frozen", "learning_rate": 1e-5, "image_size": 256, "p_at_1": 0.5, "map": 0.4},
        {"backbone": "vgg16", "mode": "frozen+full", "learning_rate": 1e-5, "image_size": 256, "p_at_1": 0.7, "map": 0.6},
        {"backbone": "resnet50_v2", "mode": "frozen", "learning_rate": 1e-5, "image_size": 256, "p_at_1": None, "map": None},
    ]
    table = comparison(rows)
    assert [r["backbone"] for r in table] == ["vgg16", "resnet50_v2"]
    assert table[0]["P@1 frozen"] == 0.5 and table[0]["P@1 frozen+full"] == 0.7
    assert table[0]["mAP frozen"] == 0.4 and table[0]["mAP frozen+full"] == 0.6
    assert table[1]["mAP frozen+full"] is None  # never ran: shown as missing, not as 0
    assert to_csv(table).splitlines()[0] == ("backbone,weights,learning_rate,image_size,"
                                             "P@1 frozen,P@1 frozen+full,mAP frozen,mAP frozen+full")


def test_transfer_grid_gives_each_backbone_its_own_weights_and_recipe_in_both_modes():
    g = GRIDS["transfer"]
    cells = expand(g["backbones"], g["modes"], g["learning_rates"], g["image_sizes"])
    assert [(c.backbone, c.mode) for c in cells] == [
        ("small_cnn", "frozen"), ("efficientnet_lite0", "frozen"),
        ("small_cnn", "frozen+full"), ("efficientnet_lite0", "frozen+full")]
    assert cells[1].name == "efficientnet_lite0-frozen"  # no lr / size axis: the recipe's values
    child = {(c.backbone, c.mode): child_parameters(c, g["fixed"], {"augment.workers": 1}, g["per_backbone"])
             for c in cells}
    scratch, lite = child["small_cnn", "frozen+full"], child["efficientnet_lite0", "frozen+full"]
    assert scratch["weights"] == "none" and scratch["image_size"] == 64 and scratch["epochs_full"] == 30
    assert lite["weights"] == "imagenet" and lite["image_size"] == 96 and lite["epochs_full"] > 0
    assert child["efficientnet_lite0", "frozen"]["epochs_full"] == 0  # frozen only still means frozen only
    assert lite["params"]["train_frozen.batch_size"] == 32 and lite["params"]["augment.workers"] == 1
    assert lite["params"]["registry.store"] != "registry"  # the recipe cannot publish to the shared registry
    # the table says what each row ran with; both modes of one backbone share a row
    rows = [{"backbone": c.backbone, "mode": c.mode, "weights": setting(child[c.backbone, c.mode], "weights"),
             "learning_rate": setting(child[c.backbone, c.mode], "lr_frozen", "lr_full"),
             "image_size": setting(child[c.backbone, c.mode], "image_size"), "p_at_1": 0.5, "map": 0.3} for c in cells]
    table = comparison(rows)
    assert [(r["backbone"], r["weights"], r["learning_rate"], r["image_size"]) for r in table] == [
        ("small_cnn", "none", "0.001 / 0.003", 64), ("efficientnet_lite0", "imagenet", "0.001 / 0.0001", 96)]
    assert all(r["mAP frozen"] == r["mAP frozen+full"] == 0.3 for r in table)
    assert "| efficientnet_lite0 | imagenet | 0.001 / 0.0001 | 96 |" in to_markdown(table)


def test_an_axis_value_overrides_the_recipe():
    g = GRIDS["transfer"]
    child = child_parameters(Cell("efficientnet_lite0", "frozen+full", 3e-4, 128), g["fixed"], None, g["per_backbone"])
    assert (child["lr_frozen"], child["lr_full"], child["image_size"], child["weights"]) == (3e-4, 3e-4, 128, "imagenet")


def test_metrics_come_back_from_retrains_json_result():
    class State:
        async def aresult(self, raise_on_failure: bool = True):
            return {"metrics": {"p_at_1": 0.8125, "map": 0.6033, "n_test": 14, "model": "x"}, "stages": []}

    class Run:
        state = State()

    assert asyncio.run(_child_metrics(Run())) == {"p_at_1": 0.8125, "map": 0.6033, "n_test": 14.0}


def test_the_run_form_accepts_null_as_no_axis():
    from prefect.utilities.callables import parameter_schema

    from flows.sweep import sweep

    props = parameter_schema(sweep.fn).properties
    for name in ("learning_rates", "image_sizes"):
        items = [o for o in props[name]["anyOf"] if o.get("type") == "array"][0]["items"]
        assert {"type": "null"} in items["anyOf"], (name, items)
    assert "per_backbone" in props
