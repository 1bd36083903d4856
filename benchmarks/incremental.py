"""Incremental data prep: adding a 1,500-image slice to the study-size set costs about the slice.

    python -m benchmarks.run incremental [--scale 1.0] [--reps 3]

Issue 11 item 5: at the study's size (47,441 images at 256 px), bringing the data version,
``ingest`` and ``augment`` up to date after a 1,500-image slice is added must take at most 2x
what those steps take for the 1,500 images alone. The images are the study set of
``python -m tasks.demo.synth --preset study`` (``benchmarks/datasets.py``, generated once, reused
through hard links): a local sliced source holds the first 45,941 as slice ``s0001``; the last
1,500 are the new slice. Two variants, each a fresh process per step, 2 workers, image_size 256:

* ``slice_alone``: a fresh repository follows a source holding only the new slice
  (``tagsmith data track``: one ``dvc import-url``), then ``python -m tasks.ingest`` and
  ``python -m tasks.augment`` with a cold memo.
* ``add_slice``: a repository that follows the base source and has already run ingest and
  augment on it (split ledger recorded, memo warm) gets the slice the way a user adds it
  (``tagsmith data add``, the labeller's step, timed apart) and then ``tagsmith data update``
  (imports only the new slice), ``python -m tasks.ingest``, ``python -m tasks.augment``.

After each ``add_slice`` repetition the slice is taken out again (source, import, DVC cache
objects and memo entries it added), so every repetition starts from the same state.
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

STUDY_IMAGES, NEW_IMAGES, SIZE, WORKERS = 47441, 1500, 256, 2
TARGET = 2.0
TARGET_NAME = "issue 11 item 5: add a 1,500-image slice <= 2x the slice alone"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(common.PROJECT), TF_CPP_MIN_LOG_LEVEL="2", TQDM_DISABLE="1",
               DVC_NO_ANALYTICS="1")
    env.pop("TAGSMITH_MEMO", None)  # each workspace's params.yaml says where its memo is
    env.pop("PREFECT_API_URL", None)  # `tagsmith data add` emits no event here
    return env


def step(args: list[str], cwd: Path) -> float:
    """Run ``python <args>`` in ``cwd``; returns its wall time in seconds."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} in {cwd} failed ({out.returncode}):\n"
                           f"{(out.stdout + out.stderr)[-3000:]}")
    return time.perf_counter() - start


def _labels_tsv(rows: list[str], classes: list[str]) -> str:
    """The synthetic set's ``name<TAB>indices`` rows as ``tagsmith data add`` wants them (names)."""
    out = []
    for row in rows:
        name, labels = row.split("\t", 1)
        out.append(f"{name}\t{','.join(classes[int(i)] for i in labels.split(',') if i)}\n")
    return "".join(out)


def build_sources(data: Path, base_n: int, new_n: int, home: Path) -> dict[str, Path]:
    """The base source (slice s0001 = the first ``base_n`` images, hard links), the new slice's
    folder + labels (the next ``new_n``), and a source holding only the new slice."""
    paths = {"base": home / "source", "new": home / "new", "alone": home / "source-alone"}
    if (home / "done").is_file():
        return paths
    shutil.rmtree(home, ignore_errors=True)
    classes = [c.strip() for c in (data / "classes.txt").read_text().splitlines() if c.strip()]
    rows = (data / "labels.tsv").read_text().splitlines()[1:base_n + new_n + 1]
    for part, chunk in (("base", rows[:base_n]), ("new", rows[base_n:])):
        folder = paths[part] / "slices" / "s0001" if part == "base" else paths["new"]
        (folder / "images").mkdir(parents=True)
        for row in chunk:
            name = row.split("\t", 1)[0]
            os.link(data / "images" / name, folder / "images" / name)
        (folder / "labels.tsv").write_text(_labels_tsv(chunk, classes))
    (paths["base"] / "classes.txt").write_text("".join(c + "\n" for c in classes))
    # the base slice is laid out directly (hard links): `tagsmith data add` would decode and copy
    # 45,941 images once, for nothing this benchmark measures
    (paths["base"] / "slices" / "s0001" / "MANIFEST.json").write_text('{"slice": "s0001", "files": {}}\n')
    (home / "classes.txt").write_text("".join(c + "\n" for c in classes))
    step(["-m", "flows.cli", "data", "add", str(paths["new"] / "images"), "--labels", str(paths["new"] / "labels.tsv"),
          "--source", str(paths["alone"]), "--slice", "s0002", "--classes", str(home / "classes.txt")], home)
    (home / "done").write_text("")
    return paths


def workspace(work: Path, source: Path, ledger: bool) -> float:
    """A fresh repository (git + DVC) following ``source``; returns the `tagsmith data track` time."""
    from flows.bridge.overrides import apply_overrides

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    step(["-m", "dvc", "init", "-q"], work)
    step(["-m", "dvc", "config", "cache.type", "reflink,hardlink,copy"], work)
    shutil.copy2(common.PROJECT / "params.yaml", work / "params.yaml")
    apply_overrides(work / "params.yaml", {"ingest.workers": WORKERS, "augment.workers": WORKERS,
                                           "augment.image_size": SIZE,
                                           "ingest.splits_ledger": "data.splits.tsv" if ledger else None})
    return step(["-m", "flows.cli", "data", "track", str(source), "--workspace", "."], work)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


class Added:
    """The ``add_slice`` variant: a warm workspace on the base source, and one repetition."""

    def __init__(self, paths: dict[str, Path], work: Path, record: dict):
        self.paths, self.work, self.record = paths, work, record
        t0 = time.perf_counter()
        workspace(work, paths["base"], ledger=False)
        step(["-m", "tasks.ingest"], work)
        step(["-m", "tasks.augment"], work)
        # record the splits (`tagsmith splits record`): the base's images keep theirs
        shutil.copy2(work / "artifacts" / "splits" / "ledger.tsv", work / "data.splits.tsv")
        from flows.bridge.overrides import apply_overrides
        apply_overrides(work / "params.yaml", {"ingest.splits_ledger": "data.splits.tsv"})
        step(["-m", "tasks.ingest"], work)  # with the ledger, as every later run
        self.setup_s = time.perf_counter() - t0

    def __call__(self) -> float:
        src, w = self.paths["base"], self.work
        before = _files(w / ".cache") | _files(w / ".dvc" / "cache")
        add_s = step(["-m", "flows.cli", "data", "add", str(self.paths["new"] / "images"), "--labels",
                      str(self.paths["new"] / "labels.tsv"), "--source", str(src), "--slice", "s0002"], w)
        times = {"data_s": step(["-m", "flows.cli", "data", "update", "--workspace", "."], w),
                 "ingest_s": step(["-m", "tasks.ingest"], w), "augment_s": step(["-m", "tasks.augment"], w)}
        # take the slice out again: the next repetition must find the same state
        shutil.rmtree(src / "slices" / "s0002")
        (w / "data" / "slices" / "s0002.dvc").unlink()
        shutil.rmtree(w / "data" / "slices" / "s0002")
        for p in (_files(w / ".cache") | _files(w / ".dvc" / "cache")) - before:
            p.unlink()
        return _log(self.record, times, data_add_s=add_s)


def alone(paths: dict[str, Path], work: Path, record: dict) -> float:
    """The ``slice_alone`` variant: the new slice in a fresh repository, memo cold."""
    times = {"data_s": workspace(work, paths["alone"], ledger=False),
             "ingest_s": step(["-m", "tasks.ingest"], work), "augment_s": step(["-m", "tasks.augment"], work)}
    shutil.rmtree(work, ignore_errors=True)
    return _log(record, times)


def _log(record: dict, times: dict[str, float], **extra: float) -> float:
    for key, value in {**times, **extra}.items():
        record.setdefault(key, []).append(round(value, 2))
    return sum(times.values())


def run(scale: float = 1.0, reps: int = 3, out_dir: Path = common.RESULTS, command: str = "",
        max_foreign_load: float | None = None) -> Path:
    """Measure, write ``incremental.json`` and return its path."""
    started, info = time.perf_counter(), common.machine()
    full_n = max(48, round(STUDY_IMAGES * scale))
    new_n = max(8, round(NEW_IMAGES * scale))
    t0 = time.perf_counter()
    data = synth_dataset(full_n, SIZE, workers=2)
    paths = build_sources(data, full_n - new_n, new_n, data.parent / f"incremental-{new_n}")
    generate_s = time.perf_counter() - t0
    work = common.bench_root() / "incremental-work"
    details: dict[str, dict] = {"slice_alone": {}, "add_slice": {}}
    added = Added(paths, work / "add", details["add_slice"])
    variants = {"slice_alone": lambda: alone(paths, work / "alone", details["slice_alone"]), "add_slice": added}
    m = harness.interleave(variants, reps, max_foreign_load=max_foreign_load)
    shutil.rmtree(work, ignore_errors=True)
    kept = m.kept_index
    results = {k: harness.summarize(v, "s", 2, kept) for k, v in m.values.items()}
    ratios: dict = {}
    r = harness.compare(ratios, "add_slice_vs_slice_alone", m.kept("add_slice"), m.kept("slice_alone")) if kept else None
    table = ["| variant | images | data version s | ingest s | augment s | total s |", "|---|---|---|---|---|---|"]
    for k, d in details.items():
        images = full_n if k == "add_slice" else new_n
        table.append(f"| {k} | {images:,} | {', '.join(map(str, d['data_s']))} | {', '.join(map(str, d['ingest_s']))} "
                     f"| {', '.join(map(str, d['augment_s']))} | {', '.join(f'{v:.2f}' for v in m.values[k])} |")
    targets = [harness.judge(TARGET_NAME, r, f"<= {TARGET}x", r is not None and r <= TARGET,
                             "" if r is None or r <= TARGET else "see the per-step table: the step that grew most is "
                             "what still scales with the whole dataset",
                             basis="median over kept repetitions of add_slice / slice_alone (data version + ingest + "
                                   "augment wall time)")]
    notes = [f"{full_n:,} images at {SIZE} px (scale {scale}): base slice {full_n - new_n:,}, new slice {new_n:,}; "
             f"{WORKERS} workers",
             f"dataset generation and sources (not timed): {generate_s:.0f} s; base workspace (track, ingest, "
             f"augment, memo filled; not timed): {added.setup_s:.0f} s",
             "each step is a fresh process: `tagsmith data track|update`, `python -m tasks.ingest`, `python -m tasks.augment`",
             "`tagsmith data add` (the labeller's step, not part of the pipeline) took "
             f"{', '.join(map(str, details['add_slice'].get('data_add_s', [])))} s"]
    return common.write_result(
        "incremental", command, {"scale": scale, "reps": reps, "images": full_n, "new_images": new_n,
                                 "image_size": SIZE, "workers": WORKERS},
        results, ratios, targets, notes, info, started, out_dir, m, {"stages": details, "tables": [table]})
