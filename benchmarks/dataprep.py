"""Data preparation: ingest + sharding of the study-size synthetic set, 1 and 2 workers.

    python -m benchmarks.run dataprep [--scale 1.0] [--reps 3]

The dataset is ``python -m tasks.demo.synth --preset study`` (47,441 images at 256 px at scale 1,
``round(47441 * scale)`` otherwise), generated once under /tmp/tagsmith-bench. A second set
of a quarter of the size (the first quarter of the images, hard links) shows whether peak
memory grows with the dataset. Each measurement runs the real stage commands
``python -m tasks.ingest`` then ``python -m tasks.augment`` (image_size 256, the study's) in a
scratch workspace whose params.yaml sets ``ingest.workers`` and ``augment.workers``; the peak
memory is the largest sum of RSS over the stage's process tree (the stage and its worker
processes), sampled every 0.2 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common, harness
from benchmarks.datasets import synth_dataset

STUDY_IMAGES, SIZE, WORKERS = 47441, 256, (1, 2)
FLAT_LIMIT = 1.25  # "flat": peak at full size at most 25 % above the peak at a quarter of it


def quarter_dataset(data: Path, count: int) -> Path:
    """The first ``count`` images of ``data`` as a dataset of its own (hard links, no copies)."""
    home = data.parent / f"first-{count}"
    out = home / "data"
    if (home / "done").is_file():
        return out
    shutil.rmtree(home, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    lines = (data / "labels.tsv").read_text().splitlines()
    keep = lines[1:count + 1]
    for line in keep:
        name = line.split("\t", 1)[0]
        os.link(data / "images" / name, out / "images" / name)
    names = {line.split("\t", 1)[0] for line in keep}
    (out / "labels.tsv").write_text("\n".join([lines[0], *keep]) + "\n")
    test = [t for t in (data / "test.txt").read_text().splitlines() if t in names]
    (out / "test.txt").write_text("".join(t + "\n" for t in test))
    shutil.copy2(data / "classes.txt", out / "classes.txt")
    (home / "done").write_text("")
    return out


def run_stage(module: str, cwd: Path) -> tuple[float, float]:
    """Run ``python -m <module>`` in ``cwd``; returns (wall s, peak RSS of its process tree in MB)."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(common.PROJECT), TF_CPP_MIN_LOG_LEVEL="2", TQDM_DISABLE="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} in {cwd} failed ({proc.returncode}):\n{output[-3000:]}")
    return wall, peak / 2**20


def prepare(data: Path, images: int, workers: int, work: Path, record: dict) -> float:
    """ingest + augment of ``data`` with ``workers``; returns images/s and fills ``record``."""
    from flows.bridge.overrides import apply_overrides

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy2(common.PROJECT / "params.yaml", work / "params.yaml")
    # no split ledger: every image is new, as in a first ingest
    apply_overrides(work / "params.yaml", {"ingest.root": str(data), "ingest.workers": workers,
                                           "ingest.splits_ledger": None,
                                           "augment.workers": workers, "augment.image_size": SIZE})
    ingest_s, ingest_mb = run_stage("tasks.ingest", work)
    augment_s, augment_mb = run_stage("tasks.augment", work)
    shutil.rmtree(work, ignore_errors=True)  # the shards of the full set are ~2 GB
    for key, value in (("ingest_s", ingest_s), ("augment_s", augment_s), ("ingest_peak_mb", ingest_mb),
                       ("augment_peak_mb", augment_mb)):
        record.setdefault(key, []).append(round(value, 2))
    return images / (ingest_s + augment_s)


def run(scale: float = 1.0, reps: int = 3, out_dir: Path = common.RESULTS, command: str = "",
        max_foreign_load: float | None = None) -> Path:
    """Measure, write ``dataprep.json`` and return its path."""
    started, info = time.perf_counter(), common.machine()
    full_n = max(40, round(STUDY_IMAGES * scale))
    sizes = {"full": full_n, "quarter": full_n // 4}
    t0 = time.perf_counter()
    data = {"full": synth_dataset(full_n, SIZE, workers=2)}
    generate_s = time.perf_counter() - t0
    data["quarter"] = quarter_dataset(data["full"], sizes["quarter"])
    work = common.bench_root() / "dataprep-work"
    details: dict[str, dict] = {}
    variants = {}
    for label in sizes:
        for w in WORKERS:
            key = f"{label}/w{w}"
            details[key] = {}
            variants[key] = (lambda label=label, w=w, key=key:
                             prepare(data[label], sizes[label], w, work / key.replace("/", "-"), details[key]))
    m = harness.interleave(variants, reps, max_foreign_load=max_foreign_load)
    shutil.rmtree(work, ignore_errors=True)
    kept = m.kept_index
    results = {k: harness.summarize(v, "images/s", 1, kept) for k, v in m.values.items()}
    # Peak memory is not a timing: every repetition counts (load does not change what is resident).
    peak = {k: max(max(d["ingest_peak_mb"]), max(d["augment_peak_mb"])) for k, d in details.items()}
    ratios: dict = {}
    s = None
    if kept:
        s = harness.compare(ratios, "speedup_2_vs_1_workers_full", m.kept("full/w2"), m.kept("full/w1"))
        harness.compare(ratios, "speedup_2_vs_1_workers_quarter", m.kept("quarter/w2"), m.kept("quarter/w1"))
    for w in WORKERS:
        ratios[f"peak_memory_full_vs_quarter_w{w}"] = harness.ratio(peak[f"full/w{w}"], peak[f"quarter/w{w}"])
    table = ["| variant | images | ingest s | augment s | ingest peak MB | augment peak MB |",
             "|---|---|---|---|---|---|"]
    for k, d in details.items():
        table.append(f"| {k} | {sizes[k.split('/')[0]]:,} | {', '.join(map(str, d['ingest_s']))} | "
                     f"{', '.join(map(str, d['augment_s']))} | {', '.join(map(str, d['ingest_peak_mb']))} | "
                     f"{', '.join(map(str, d['augment_peak_mb']))} |")
    flat = max(ratios[f"peak_memory_full_vs_quarter_w{w}"] for w in WORKERS)
    foreign = [r["foreign_load"] for r in m.reps if r["foreign_load"] is not None]
    why_s = "" if s is None or s >= 1.7 else (
        f"other processes used up to {max(foreign, default=0):.1f} cores during the kept repetitions; the parent "
        "process (manifest, TFRecord writing) competes with the workers for the same cores")
    basis = "median over kept repetitions of the per-repetition ratio"
    targets = [harness.judge("dataprep: 2 workers vs 1 (full size)", s, ">= 1.7x", s is not None and s >= 1.7,
                             why_s, basis=basis),
               harness.judge("dataprep: peak memory, full vs 1/4 size (worst of 1, 2 workers)", flat,
                             f"<= {FLAT_LIMIT}x (flat)", flat <= FLAT_LIMIT,
                             basis="largest peak over all repetitions, full vs quarter")]
    notes = [f"{full_n:,} images at {SIZE} px (scale {scale}); quarter = first {sizes['quarter']:,}",
             f"dataset generation (not timed as part of the benchmark): {generate_s:.0f} s"
             + (" (reused from an earlier run)" if generate_s < 5 else ""),
             "images/s = images / (ingest wall + augment wall), each a fresh `python -m tasks.<stage>` process",
             "peak memory per variant (MB, max over both stages): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())]
    return common.write_result(
        "dataprep", command, {"scale": scale, "reps": reps, "images": sizes, "image_size": SIZE, "workers": list(WORKERS)},
        results, ratios, targets, notes, info, started, out_dir, m,
        {"stages": details, "peak_mb": peak, "tables": [table]})
