"""Accuracy (optional, long): frozen-only against frozen-then-full, from scratch and from ImageNet.

    python -m benchmarks.run accuracy [--backbones small_cnn,efficientnet_lite0:imagenet]

Each setup (a backbone, its starting weights and its schedule: ``SETUPS``; ``name:weights``
picks the weights, a backbone without a setup trains from scratch with params.yaml's
schedule) runs the real stage commands in a scratch workspace under /tmp/tagsmith-bench with
the repository's params.yaml and split ledger, changed only by the setup's overrides and the
dataset root: ingest, augment, ``train frozen``, an evaluation of the frozen model, ``train
full`` and ``evaluate``. Both evaluations are the evaluate stage's own code on the same test
split. The default set is the issue's: small_cnn from scratch (make demo-scratch) and
efficientnet_lite0 from ImageNet (make demo). Below ``--scale 0.1`` (smoke runs) the data is the tiny
preset at 32 px and each phase trains one epoch.

Targets (per ImageNet setup, against the setups from scratch): its frozen-only mAP at least 3x
the best random-base frozen mAP; its frozen-then-full mAP at least the best mAP from scratch
(either phase), in no more training wall time than that run took. Accuracy is deterministic;
the wall time is not: a setup during which other processes used more than the foreign-load
limit is not judged on time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import common, harness
from flows.bridge.recipes import as_params

METRICS = ["map", "p_at_1", "micro_f1", "macro_f1", "subset_accuracy"]
EVAL_FROZEN = ("from pathlib import Path; from tasks.common.config import EvaluateConfig, load; from tasks.evaluate import run; "
               "run(load(EvaluateConfig), model_dir=Path('artifacts/models/frozen'), out_dir=Path('artifacts/eval-frozen'))")
BASIS = "one deterministic run per setup, evaluated on the same test split"


@dataclass(frozen=True)
class Setup:
    """One row pair of the table: a backbone, its starting weights and what differs from params.yaml."""

    backbone: str
    weights: str = "none"
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.backbone}:{self.weights}"


# What the demos train, with the recipes of flows/bridge/recipes.py (also the sweep's transfer
# grid's): small_cnn from scratch (make demo-scratch), lite0 from ImageNet (params.yaml, make demo).
SETUPS: dict[str, Setup] = {
    "small_cnn": Setup("small_cnn", "none", as_params("small_cnn-scratch")),
    "efficientnet_lite0": Setup("efficientnet_lite0", "imagenet", as_params("efficientnet_lite0-imagenet")),
}
DEFAULT = ["small_cnn", "efficientnet_lite0"]
SMOKE = {"augment.image_size": 32, "augment.preview_images": 1, "augment.preview_draws": 1,
         "train_frozen.epochs": 1, "train_full.epochs": 1, "train_frozen.batch_size": 16, "train_full.batch_size": 16}


def setup_for(spec: str) -> Setup:
    """``backbone`` (its setup, or from scratch with params.yaml's schedule) or ``backbone:weights``."""
    backbone, _, weights = spec.partition(":")
    base = SETUPS.get(backbone, Setup(backbone))
    return Setup(backbone, weights or base.weights, base.overrides)


def _data(smoke: bool) -> Path:
    """The embedded dataset: the repository's data/ when present, else generated under /tmp."""
    from tasks.demo import synth

    if not smoke and (common.PROJECT / "data" / "labels.tsv").is_file():
        return common.PROJECT / "data"
    preset = "tiny" if smoke else "demo"
    home = common.bench_root() / f"embedded-{preset}"
    if not (home / "done").is_file():
        shutil.rmtree(home, ignore_errors=True)
        synth.generate(home / "data", preset=preset, workers=2)
        (home / "done").write_text("")
    return home / "data"


def _step(cmd: list[str], cwd: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(common.PROJECT), TF_CPP_MIN_LOG_LEVEL="2", TQDM_DISABLE="1")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
    return time.perf_counter() - start


def one_setup(setup: Setup, data: Path, work: Path, smoke: bool) -> dict:
    """Run the pipeline up to evaluate for one setup; metrics, times and load average per phase."""
    from flows.bridge.overrides import apply_overrides

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("params.yaml", "data.splits.tsv"):
        shutil.copy2(common.PROJECT / name, work / name)
    overrides = {**setup.overrides, "ingest.root": str(data), "train_frozen.backbone": setup.backbone,
                 "train_frozen.weights": setup.weights, **(SMOKE if smoke else {})}
    apply_overrides(work / "params.yaml", overrides)
    probe, times, load = harness.Probe(), {}, {}

    def phase(key: str, *cmds: list[str]) -> None:
        times[key] = sum(_step(c, work) for c in cmds)
        load[key] = harness.loadavg()  # at the phase's end

    phase("prepare_s", ["-m", "tasks.ingest"], ["-m", "tasks.augment"])
    phase("train_frozen_s", ["-m", "tasks.train", "frozen"])
    phase("eval_frozen_s", ["-c", EVAL_FROZEN])
    phase("train_full_s", ["-m", "tasks.train", "full"])
    phase("eval_s", ["-m", "tasks.evaluate"])
    out = {"setup": {"backbone": setup.backbone, "weights": setup.weights, "overrides": overrides},
           "times": {k: round(v, 1) for k, v in times.items()}, "loadavg_at_phase_end": load, "load": probe.finish()}
    for ph, folder in (("frozen", "eval-frozen"), ("full", "eval")):
        m = json.loads((work / "artifacts" / folder / "metrics.json").read_text())
        meta = json.loads((work / "artifacts/models" / ph / "metadata.json").read_text())
        out[ph] = {**{k: m.get(k) for k in METRICS}, "epochs_run": meta.get("epochs_run"), "n_test": m.get("n_test")}
    out["train_s"] = {"frozen": out["times"]["train_frozen_s"],
                      "full": round(out["times"]["train_frozen_s"] + out["times"]["train_full_s"], 1)}
    shutil.rmtree(work, ignore_errors=True)
    return out


def judge(per: dict[str, dict], max_foreign_load: float) -> tuple[list[dict], dict[str, Any]]:
    """The issue's targets for every ImageNet setup against the setups from scratch."""
    targets, ratios = [], {}
    scratch = {n: r for n, r in per.items() if r["setup"]["weights"] == "none"}
    # The best run from scratch: its mAP and the training time it took (frozen-only runs end at phase 1).
    best = max(((r[ph]["map"] or 0.0, r["train_s"][ph], n, ph) for n, r in scratch.items() for ph in ("frozen", "full")),
               default=None)
    random_frozen = max((r["frozen"]["map"] or 0.0 for r in scratch.values()), default=None)
    for n, r in per.items():
        if r["setup"]["weights"] != "imagenet":
            continue
        gain = harness.ratio(r["frozen"]["map"], random_frozen)
        ratios[f"{n}/frozen_map_vs_random_base_frozen"] = gain
        targets.append(harness.judge(f"accuracy {n}: frozen-only mAP vs random-base frozen", gain, ">= 3x",
                                     gain is not None and gain >= 3, "no setup from scratch ran" if random_frozen is None else "",
                                     basis=f"{BASIS}; random base: best frozen mAP from scratch"))
        vs = f"{best[2]} {'frozen then full' if best[3] == 'full' else 'frozen only'}" if best else "none"
        quality = harness.ratio(r["full"]["map"], best[0]) if best else None
        ratios[f"{n}/full_map_vs_best_from_scratch"] = quality
        targets.append(harness.judge(f"accuracy {n}: frozen-then-full mAP vs best from scratch", quality, ">= 1x",
                                     quality is not None and quality >= 1, "" if best else "no setup from scratch ran",
                                     basis=f"{BASIS}; best from scratch: {vs}"))
        busy = [f"{k}: foreign load {x['load']['foreign_load']} > {max_foreign_load} cores"
                for k, x in ((n, r), (best[2] if best else "", scratch.get(best[2]) if best else None))
                if x and x["load"]["foreign_load"] is not None and x["load"]["foreign_load"] > max_foreign_load]
        took = harness.ratio(r["train_s"]["full"], best[1]) if best else None
        ratios[f"{n}/train_s_vs_best_from_scratch"] = took
        targets.append(harness.judge(f"accuracy {n}: training wall time vs best from scratch",
                                     None if busy else took, "<= 1x", took is not None and took <= 1,
                                     "; ".join(busy) or ("" if best else "no setup from scratch ran"),
                                     basis=f"training s (train_frozen + train_full) against {vs}'s"))
    return targets, ratios


def run(scale: float = 1.0, reps: int = 1, out_dir: Path = common.RESULTS, command: str = "",
        backbones: list[str] | None = None, max_foreign_load: float | None = None) -> Path:
    """Train and evaluate every setup; write ``accuracy.json`` and return its path."""
    started, info = time.perf_counter(), common.machine()
    limit = harness.default_max_foreign_load() if max_foreign_load is None else max_foreign_load
    smoke = scale < 0.1
    setups = [setup_for(s) for s in backbones or DEFAULT]
    data = _data(smoke)
    per = {}
    for s in setups:
        print(f"  {s.name}", flush=True)
        per[s.name] = one_setup(s, data, common.bench_root() / f"accuracy-{s.backbone}-{s.weights}", smoke)
        print(f"  {s.name}: {per[s.name]['times']} load {per[s.name]['load']}", flush=True)
    table = ["| backbone | weights | px | phase | epochs | mAP | P@1 | micro F1 | macro F1 | subset acc. | train s | "
             "load avg at phase end |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for n, r in per.items():
        size = r["setup"]["overrides"].get("augment.image_size", "params")
        for ph in ("frozen", "full"):
            m = r[ph]
            table.append(f"| {r['setup']['backbone']} | {r['setup']['weights']} | {size} | "
                         f"{'frozen only' if ph == 'frozen' else 'frozen then full'} | {m['epochs_run']} | "
                         + " | ".join(f"{m[k]:.3f}" if m[k] is not None else "—" for k in METRICS)
                         + f" | {r['train_s'][ph]} | {r['loadavg_at_phase_end'][f'train_{ph}_s']} |")
            results[f"{n}/{ph}/map"] = harness.summarize([m["map"] or 0.0], "mAP")
            results[f"{n}/{ph}/p_at_1"] = harness.summarize([m["p_at_1"] or 0.0], "P@1")
            results[f"{n}/{ph}/train_s"] = harness.summarize([r["train_s"][ph]], "s (training, cumulative)", 1)
    targets, ratios = judge(per, limit)
    notes = [f"dataset: {data}{'' if smoke else ' (the embedded demo set: tasks.demo.synth --preset demo, 80 px)'}; "
             "a setup's px is its augment.image_size (params: params.yaml's)",
             "train s: the frozen phase's own; for frozen then full, both phases' training together",
             "deterministic training: one run is the result (reps is ignored); the time targets are not judged "
             f"for a setup during which other processes used more than {limit} cores"]
    return common.write_result("accuracy", command, {"scale": scale, "setups": [s.name for s in setups], "smoke": smoke},
                               results, ratios, targets, notes, info, started, out_dir,
                               extra={"per_backbone": per, "tables": [table]})
