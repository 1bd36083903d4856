"""Run the benchmarks and write their result files, SUMMARY.md and the README's table.

    python -m benchmarks.run                           # input training orchestration dataprep augmentation
    python -m benchmarks.run input training --reps 7
    python -m benchmarks.run dataprep --scale 0.25     # a quarter of the study's 47,441 images
    python -m benchmarks.run accuracy                  # optional, long: frozen-only vs frozen+full, scratch vs ImageNet
    python -m benchmarks.run incremental               # optional: a 1,500-image slice added to the study set
    python -m benchmarks.run --scale 0.01 --reps 1 --out /tmp/b   # smoke size

Results: ``benchmarks/results/<name>.json`` (or ``--out``) and ``SUMMARY.md`` beside them,
rebuilt from every result file in that folder; writing into ``benchmarks/results`` also
rewrites the README's benchmark table, and needs a clean tree (``--allow-dirty`` /
``TAGSMITH_ALLOW_DIRTY=1`` to override: the files then say so) and at least 3 repetitions.
Generated data goes to ``/tmp/tagsmith-bench`` (``TAGSMITH_BENCH_DIR``), never into the
repository.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common, harness, summary  # noqa: E402

BENCHMARKS = {
    "input": "benchmarks.input_pipeline",
    "training": "benchmarks.training",
    "orchestration": "benchmarks.orchestration",
    "dataprep": "benchmarks.dataprep",
    "augmentation": "benchmarks.augmentation_speed",
    "accuracy": "benchmarks.accuracy",
    "incremental": "benchmarks.incremental",
}
DEFAULT = ["input", "training", "orchestration", "dataprep", "augmentation"]
DETERMINISTIC = {"accuracy"}  # one run is the result: repetitions do not apply


def refusal(out: Path, prov: dict, allow_dirty: bool, reps: int | None, names: list[str]) -> str | None:
    """Why results must not be written into ``out`` (None: they may)."""
    if out.resolve() != common.RESULTS.resolve():
        return None  # scratch folders (smoke runs) record the provenance but are not the record
    if prov["dirty"] is not False and not allow_dirty:
        what = ", ".join(prov["dirty_paths"][:8]) if prov["dirty"] else "not a git checkout"
        return (f"the working tree has uncommitted changes ({what}); results in {out} must come from a "
                "commit: commit first, or pass --allow-dirty (make bench ALLOW_DIRTY=1) and the files say so")
    if reps is not None and reps < harness.MIN_REPS and set(names) - DETERMINISTIC:
        return f"--reps {reps}: committed results need at least {harness.MIN_REPS} repetitions"
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen benchmarks, rewrite SUMMARY.md (and the README)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                    help=f"any of {', '.join(BENCHMARKS)} (default: {' '.join(DEFAULT)})")
    ap.add_argument("--scale", type=float, default=1.0, help="data size relative to the full benchmark")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per variant (default: per benchmark)")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help="results folder")
    ap.add_argument("--backbones", default=None,
                    help="training/accuracy: comma-separated backbones (default: per benchmark)")
    ap.add_argument("--max-foreign-load", type=float, default=None,
                    help="exclude a repetition during which other processes used more cores than this "
                         "(default: TAGSMITH_BENCH_MAX_FOREIGN_LOAD or a quarter of the cores)")
    ap.add_argument("--allow-dirty", action="store_true", default=bool(os.environ.get("TAGSMITH_ALLOW_DIRTY")),
                    help="write into benchmarks/results from a tree with uncommitted changes")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    if args.reps is not None and args.reps < 1:
        ap.error("--reps must be at least 1")
    # Canonical order: training enables TensorFlow's op determinism for the whole process,
    # which must not slow the input benchmark down when both run in one process.
    names = [n for n in BENCHMARKS if n in (args.names or DEFAULT)]
    why = refusal(args.out, common.run_provenance(), args.allow_dirty, args.reps, names)
    if why:
        print(f"refusing to write results: {why}", file=sys.stderr)
        return 2
    argv_used = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv_used)
    failed = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        kwargs = {"scale": args.scale, "out_dir": args.out, "command": command}
        if args.reps is not None:
            kwargs["reps"] = args.reps
        kwargs["max_foreign_load"] = args.max_foreign_load
        if args.backbones and name in ("training", "accuracy"):
            kwargs["backbones"] = args.backbones.split(",")
        print(f"== {name} (scale {args.scale})", flush=True)
        start = time.perf_counter()
        try:
            path = module.run(**kwargs)
        except Exception as e:  # one broken benchmark should not lose the others' results
            failed.append(name)
            print(f"== {name} FAILED after {time.perf_counter() - start:.0f} s: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            continue
        print(f"== {name}: {path} ({time.perf_counter() - start:.0f} s)", flush=True)
    committed = args.out.resolve() == common.RESULTS.resolve()
    print(f"wrote {summary.write_summary(args.out, summary.README if committed else None)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
