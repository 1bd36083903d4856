"""Accuracy (optional, long): frozen-only against frozen-then-full on the embedded dataset.

    python -m benchmarks.run accuracy [--backbones small_cnn,mobilenet_v3_small]

For each backbone (weights: none, the offline demo's setting) the real stage commands run in
a scratch workspace under /tmp/tagsmith-bench with the repository's params.yaml (only the
backbone and the dataset root changed): ingest, augment, ``train frozen``, an evaluation of
the frozen model, ``train full`` and ``evaluate``. Both evaluations are the evaluate stage's
own code on the same test split. Below ``--scale 0.1`` (smoke runs) the data is the tiny
preset at 32 px and each phase trains one epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common, harness

METRICS = ["map", "p_at_1", "micro_f1", "macro_f1", "subset_accuracy"]
EVAL_FROZEN = ("from pathlib import Path; from tasks.common.config import EvaluateConfig, load; from tasks.evaluate import run; "
               "run(load(EvaluateConfig), model_dir=Path('artifacts/models/frozen'), out_dir=Path('artifacts/eval-frozen'))")


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


def one_backbone(backbone: str, data: Path, work: Path, smoke: bool) -> dict:
    """Run the pipeline up to evaluate for one backbone; returns metrics and times per phase."""
    from flows.bridge.overrides import apply_overrides

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy2(common.PROJECT / "params.yaml", work / "params.yaml")
    overrides = {"ingest.root": str(data), "train_frozen.backbone": backbone, "train_frozen.weights": "none"}
    if smoke:
        overrides.update({"augment.image_size": 32, "augment.preview_images": 1, "augment.preview_draws": 1,
                          "train_frozen.epochs": 1, "train_full.epochs": 1, "train_frozen.batch_size": 16,
                          "train_full.batch_size": 16})
    apply_overrides(work / "params.yaml", overrides)
    times = {"prepare_s": _step(["-m", "tasks.ingest"], work) + _step(["-m", "tasks.augment"], work),
             "train_frozen_s": _step(["-m", "tasks.train", "frozen"], work)}
    _step(["-c", EVAL_FROZEN], work)
    times["train_full_s"] = _step(["-m", "tasks.train", "full"], work)
    _step(["-m", "tasks.evaluate"], work)
    out = {"times": {k: round(v, 1) for k, v in times.items()}}
    for phase, folder in (("frozen", "eval-frozen"), ("full", "eval")):
        m = json.loads((work / "artifacts" / folder / "metrics.json").read_text())
        meta = json.loads((work / "artifacts/models" / phase / "metadata.json").read_text())
        out[phase] = {**{k: m.get(k) for k in METRICS}, "epochs_run": meta.get("epochs_run"), "n_test": m.get("n_test")}
    shutil.rmtree(work, ignore_errors=True)
    return out


def run(scale: float = 1.0, reps: int = 1, out_dir: Path = common.RESULTS, command: str = "",
        backbones: list[str] | None = None) -> Path:
    """Train and evaluate every backbone; write ``accuracy.json`` and return its path."""
    started, info = time.perf_counter(), common.machine()
    smoke = scale < 0.1
    backbones = backbones or ["small_cnn"]
    data = _data(smoke)
    per = {}
    for b in backbones:
        print(f"  {b}", flush=True)
        per[b] = one_backbone(b, data, common.bench_root() / f"accuracy-{b}", smoke)
    table = ["| backbone | phase | epochs | mAP | P@1 | micro F1 | macro F1 | subset acc. | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    results, ratios = {}, {}
    for b, r in per.items():
        for phase in ("frozen", "full"):
            m = r[phase]
            table.append(f"| {b} | {'frozen only' if phase == 'frozen' else 'frozen then full'} | {m['epochs_run']} | "
                         + " | ".join(f"{m[k]:.3f}" if m[k] is not None else "—" for k in METRICS)
                         + f" | {r['times'][f'train_{phase}_s']} |")
            results[f"{b}/{phase}/map"] = harness.summarize([m["map"] or 0.0], "mAP")
        ratios[f"{b}/map_gain_full_over_frozen"] = round((r["full"]["map"] or 0) - (r["frozen"]["map"] or 0), 4)
    notes = [f"dataset: {data if smoke else 'the embedded demo set (data/, tasks.demo.synth --preset demo)'}; "
             "weights: none (offline), so the frozen phase trains a head on a random base",
             "deterministic training: one repetition is the result (reps is ignored)"]
    return common.write_result("accuracy", command, {"scale": scale, "backbones": backbones, "smoke": smoke},
                               results, ratios, [], notes, info, started, out_dir, {"per_backbone": per, "tables": [table]})
