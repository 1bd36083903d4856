"""The sweep: a grid of retrains run as child runs of the ``retrain`` deployment, one comparison.

Backbones x modes (frozen only; frozen then full) x learning rates x image sizes, each backbone
with its own recipe where the grid gives one (``per_backbone``: its starting weights, image
size, epochs, learning rates), so one grid can compare a CNN from scratch with an ImageNet
backbone. A learning-rate or image-size axis of ``None`` is no axis: each backbone keeps its
recipe's value (else params.yaml's). Each cell is
a run of the deployment (its own workspace, on whatever pool serves it, GPUs included), at most
``max_parallel`` at a time; all frozen-only runs go first, so the frozen-then-full runs of the
same configuration find the frozen phase cached (same train_frozen fingerprint) instead of
training it again. The result is the study's Tables 2 and 3 in one: a row per backbone,
P@1 and mAP frozen only vs frozen then full (a Prefect markdown artifact and a CSV). Each cell
is also a DVC experiment named ``<sweep run>-<cell>``: ``dvc exp show`` in the deployed
repository lists them with their params and metrics.

    prefect deployment run sweep/sweep                        # the study's grid (needs GPUs, imagenet weights)
    prefect deployment run sweep/sweep -p grid=demo          # small_cnn, both modes: minutes on a CPU
    prefect deployment run sweep/sweep -p grid=transfer      # + efficientnet_lite0 from ImageNet (offline)
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Literal

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger  # noqa: E402
from prefect.runtime import flow_run as this_run  # noqa: E402

from flows.bridge.recipes import recipe  # noqa: E402

Mode = Literal["frozen", "frozen+full"]
MODES: tuple[Mode, ...] = ("frozen", "frozen+full")
# "Frozen only" = no fine-tuning epochs: train_full then hands on the frozen model unchanged and
# evaluate scores the frozen model.
FROZEN_ONLY: dict[str, Any] = {"epochs_full": 0}
# Sweep runs are experiments: they publish into a registry inside their own workspace, never
# into the shared one, so no sweep cell can become `production` by passing the gate.
SWEEP_PARAMS: dict[str, Any] = {"registry.store": ".tagsmith/sweep-registry"}
METRICS = (("p_at_1", "P@1"), ("map", "mAP"))

GRIDS: dict[str, dict[str, Any]] = {
    # the study: ImageNet backbones, Adam 1e-5 in both phases, 20 + 20 epochs, 256 px
    "study": {"backbones": ["vgg16", "resnet50_v2", "inception_resnet_v2"], "modes": list(MODES),
              "learning_rates": [1e-5], "image_sizes": [256],
              "fixed": {"weights": "imagenet", "epochs_frozen": 20, "epochs_full": 20}},
    # CPU: the embedded dataset's small CNN from scratch, its recipe's epochs (flows/bridge/recipes.py)
    "demo": {"backbones": ["small_cnn"], "modes": list(MODES), "learning_rates": [1e-3],
             "image_sizes": [64], "fixed": {},
             "per_backbone": {"small_cnn": recipe("small_cnn-scratch")}},
    # CPU, offline: the small CNN from scratch against EfficientNet-Lite0 from ImageNet, each with
    # its own recipe (flows/bridge/recipes.py: also make demo's, make demo-scratch's and the accuracy benchmark's)
    "transfer": {"backbones": ["small_cnn", "efficientnet_lite0"], "modes": list(MODES), "learning_rates": [None],
                 "image_sizes": [None], "fixed": {},
                 "per_backbone": {"small_cnn": recipe("small_cnn-scratch"),
                                  "efficientnet_lite0": recipe("efficientnet_lite0-imagenet")}},
}


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    backbone: str
    mode: Mode
    learning_rate: float | None  # None: the backbone's recipe (else params.yaml)
    image_size: int | None

    @property
    def name(self) -> str:
        lr = "" if self.learning_rate is None else f"-lr{self.learning_rate:g}"
        size = "" if self.image_size is None else f"-{self.image_size}px"
        return f"{self.backbone}-{self.mode.replace('+', '-')}{lr}{size}"


def expand(backbones: list[str], modes: list[Mode], learning_rates: list[float | None],
           image_sizes: list[int | None]) -> list[Cell]:
    """Every cell of the grid, frozen-only cells first (they warm the cache for the others)."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"sweep: unknown mode(s) {unknown}; known: {list(MODES)}")
    cells = [Cell(b, m, None if lr is None else float(lr), None if s is None else int(s))
             for b, m, lr, s in itertools.product(backbones, modes, learning_rates, image_sizes)]
    return sorted(cells, key=lambda c: MODES.index(c.mode))


def child_parameters(cell: Cell, fixed: dict[str, Any], params: dict[str, Any] | None,
                     per_backbone: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The retrain parameters of one cell: the grid's fixed values, the backbone's recipe, the cell's axes.

    The recipe's ``params`` (params.yaml keys) go under the sweep's own and the caller's ``params``.
    """
    chosen = dict((per_backbone or {}).get(cell.backbone, {}))
    own = chosen.pop("params", {})
    out: dict[str, Any] = {**fixed, **chosen, "backbone": cell.backbone}
    if cell.image_size is not None:
        out["image_size"] = cell.image_size
    if cell.learning_rate is not None:
        out["lr_frozen"] = out["lr_full"] = cell.learning_rate
    if cell.mode == "frozen":
        out.update(FROZEN_ONLY)
    out["params"] = {**own, **SWEEP_PARAMS, **(params or {})}
    return out


def setting(child: dict[str, Any], *keys: str) -> Any:
    """What a cell ran with, for the table: one value, ``a / b`` where the phases differ, or params.yaml's."""
    values = [child.get(k) for k in keys]
    if all(v is None for v in values):
        return "params.yaml"
    if len(set(values)) == 1:
        return values[0]
    return " / ".join("params.yaml" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values)


async def run_bounded(cells: list[Cell], launch: Callable[[Cell], Awaitable[dict[str, Any]]],
                      max_parallel: int) -> list[dict[str, Any]]:
    """``launch`` every cell, at most ``max_parallel`` at once, one mode after the other."""
    gate = asyncio.Semaphore(max(1, max_parallel))

    async def one(cell: Cell) -> dict[str, Any]:
        async with gate:
            return await launch(cell)

    rows: list[dict[str, Any]] = []
    for _, wave in itertools.groupby(cells, key=lambda c: c.mode):
        rows += await asyncio.gather(*(one(c) for c in wave))
    return rows


def comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tables 2 and 3 as one: a row per (backbone, weights, lr, size), P@1 and mAP per mode."""
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (r["backbone"], r.get("weights", "params.yaml"), r["learning_rate"], r["image_size"])
        row = table.setdefault(key, {"backbone": key[0], "weights": key[1], "learning_rate": key[2], "image_size": key[3]})
        for metric, label in METRICS:
            row[f"{label} {r['mode']}"] = r.get(metric)
    cols = [f"{label} {mode}" for _, label in METRICS for mode in MODES]
    return [{**{k: v for k, v in row.items() if k not in cols}, **{c: row.get(c) for c in cols}} for row in table.values()]


def to_markdown(table: list[dict[str, Any]]) -> str:
    cols = list(table[0]) if table else []

    def fmt(col: str, v: Any) -> str:
        if v is None:
            return "—"  # the run failed or timed out
        if isinstance(v, float):
            return f"{v:.4f}" if col.split()[0] in dict(METRICS).values() else f"{v:g}"
        return str(v)

    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                      *("| " + " | ".join(fmt(c, r[c]) for c in cols) + " |" for r in table)])


def to_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]) if table else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


async def _child_metrics(flow_run: Any) -> dict[str, float]:
    """The child's test metrics, from its persisted JSON result (retrain's return value)."""
    summary = await flow_run.state.aresult(raise_on_failure=False)
    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}


@flow(name="sweep", log_prints=True)
async def sweep(
    grid: Literal["study", "demo", "transfer"] = "study",
    backbones: list[str] | None = None,
    modes: list[Mode] | None = None,
    learning_rates: list[float | None] | None = None,
    image_sizes: list[int | None] | None = None,
    params: dict[str, Any] | None = None,
    per_backbone: dict[str, dict[str, Any]] | None = None,
    max_parallel: int = 2,
    deployment: str = "retrain/retrain",
    timeout_s: float | None = None,
    output: str = ".tagsmith/sweeps",
) -> list[dict[str, Any]]:
    """Retrain every cell of a grid through the ``retrain`` deployment and compare them.

    Args:
        grid: preset: study (vgg16, resnet50_v2, inception_resnet_v2; both modes; lr 1e-5;
            256 px; imagenet weights), demo (small_cnn; both modes; lr 1e-3; 64 px) or transfer
            (small_cnn from scratch and efficientnet_lite0 from ImageNet, each with its recipe).
        backbones: replace the preset's backbones.
        modes: replace the preset's modes: frozen (head only, then evaluated) and/or frozen+full (then fine-tuned).
        learning_rates: replace the preset's learning rates (used for both phases; null: each
            backbone's recipe, else params.yaml).
        image_sizes: replace the preset's image sizes in pixels (null: as for learning rates).
        params: extra params.yaml values for every run, as {"section.key": value}.
        per_backbone: replace the preset's recipes: backbone -> retrain parameters (weights,
            image_size, epochs_frozen, lr_full, ..., params), e.g. {"efficientnet_lite0": {"weights": "imagenet"}}.
        max_parallel: child runs at once (the pool needs this many free slots besides the sweep's own).
        deployment: the deployment each cell runs.
        timeout_s: give up waiting for a child after this many seconds (None: wait).
        output: folder for the comparison CSV and markdown (one subfolder per sweep run).
    """
    from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
    from prefect.deployments.flow_runs import arun_deployment

    log = get_run_logger()
    preset = GRIDS[grid]
    cells = expand(backbones or preset["backbones"], modes or preset["modes"],
                   learning_rates or preset["learning_rates"], image_sizes or preset["image_sizes"])
    recipes = preset.get("per_backbone", {}) if per_backbone is None else per_backbone
    log.info("sweep %s: %d runs of %s, %d at a time", this_run.name, len(cells), deployment, max_parallel)

    async def launch(cell: Cell) -> dict[str, Any]:
        experiment = f"{this_run.name}-{cell.name}"  # the cell's DVC experiment in the deployed repo
        parameters = child_parameters(cell, preset["fixed"], params, recipes)
        child = await arun_deployment(
            deployment, parameters={**parameters, "experiment": experiment},
            flow_run_name=cell.name,
            timeout=timeout_s, idempotency_key=f"{this_run.id}:{cell.name}", tags=["sweep"])
        done = bool(child.state and child.state.is_completed())
        state = child.state.name if child.state else "Unknown"  # not final: timed out waiting
        metrics = await _child_metrics(child) if done else {}
        log.info("%s: %s %s", cell.name, state, {k: metrics.get(k) for k, _ in METRICS})
        return {"run": child.name, "experiment": experiment, "state": state, "completed": done, "backbone": cell.backbone,
                "weights": setting(parameters, "weights"), "mode": cell.mode,
                "learning_rate": setting(parameters, "lr_frozen", "lr_full"), "image_size": setting(parameters, "image_size"),
                **{k: metrics.get(k) for k, _ in METRICS}}

    rows = await run_bounded(cells, launch, max_parallel)
    table = comparison(rows)
    out_dir = Path(output) / str(this_run.name or "sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.csv").write_text(to_csv(table))
    (out_dir / "comparison.md").write_text(to_markdown(table) + "\n")
    await acreate_markdown_artifact(
        "## P@1 and mAP: frozen only vs frozen then full (the study's Tables 2 and 3)\n\n" + to_markdown(table)
        + "\n\n```csv\n" + to_csv(table) + "```\n", key="sweep-comparison",
        description="Test P@1 and mAP per backbone, frozen only vs frozen then full")
    await acreate_table_artifact(rows, key="sweep-runs", description="Every child run of the sweep and its state")
    failed = [r["run"] for r in rows if not r["completed"]]
    if failed:
        raise RuntimeError(f"sweep: {len(failed)} of {len(rows)} runs did not complete: {failed}")
    return table


if __name__ == "__main__":
    asyncio.run(sweep(grid="demo"))
