"""The sweep's grid, its bounded fan-out, and the comparison table (no Prefect server needed)."""

from __future__ import annotations

import asyncio

from flows.sweep import (GRIDS, Cell, child_parameters, comparison, expand, _child_metrics,
                         run_bounded, to_csv)


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
    assert to_csv(table).splitlines()[0] == "backbone,learning_rate,image_size,P@1 frozen,P@1 frozen+full,mAP frozen,mAP frozen+full"


def test_metrics_come_back_from_retrains_json_result():
    class State:
        async def aresult(self, raise_on_failure: bool = True):
            return {"metrics": {"p_at_1": 0.8125, "map": 0.6033, "n_test": 14, "model": "x"}, "stages": []}

    class Run:
        state = State()

    assert asyncio.run(_child_metrics(Run())) == {"p_at_1": 0.8125, "map": 0.6033, "n_test": 14.0}
