"""Run the benchmarks and write their result files and SUMMARY.md.

    python -m benchmarks.run                           # input training orchestration dataprep, full size
    python -m benchmarks.run input training --reps 7
    python -m benchmarks.run dataprep --scale 0.25     # a quarter of the study's 47,441 images
    python -m benchmarks.run accuracy                  # optional, long: frozen-only vs frozen+full
    python -m benchmarks.run --scale 0.01 --reps 1 --out /tmp/b   # smoke size

Results: ``benchmarks/results/<name>.json`` (or ``--out``) and ``SUMMARY.md`` beside them,
rebuilt from every result file in that folder. Generated data goes to ``/tmp/tagsmith-bench``
(``TAGSMITH_BENCH_DIR``), never into the repository.
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

from benchmarks import common, summary  # noqa: E402

BENCHMARKS = {
    "input": "benchmarks.input_pipeline",
    "training": "benchmarks.training",
    "orchestration": "benchmarks.orchestration",
    "dataprep": "benchmarks.dataprep",
    "accuracy": "benchmarks.accuracy",
}
DEFAULT = ["input", "training", "orchestration", "dataprep"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen benchmarks, rewrite SUMMARY.md."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                    help=f"any of {', '.join(BENCHMARKS)} (default: {' '.join(DEFAULT)})")
    ap.add_argument("--scale", type=float, default=1.0, help="data size relative to the full benchmark")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per variant (default: per benchmark)")
    ap.add_argument("--out", type=Path, default=common.RESULTS, help="results folder")
    ap.add_argument("--backbones", default=None,
                    help="training/accuracy: comma-separated backbones (default: per benchmark)")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    # Canonical order: training enables TensorFlow's op determinism for the whole process,
    # which must not slow the input benchmark down when both run in one process.
    names = [n for n in BENCHMARKS if n in (args.names or DEFAULT)]
    argv_used = sys.argv[1:] if argv is None else argv
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in argv_used)
    failed = []
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        kwargs = {"scale": args.scale, "out_dir": args.out, "command": command}
        if args.reps is not None:
            kwargs["reps"] = args.reps
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
    print(f"wrote {summary.write_summary(args.out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
