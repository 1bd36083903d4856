"""Shared plumbing of the benchmarks: machine facts, provenance and the result files.

Every result file has the same top-level shape (``SCHEMA_KEYS``): the exact command, the
commit it ran from (``provenance``), the machine (CPU model, cores, memory, load average at
start and end), library versions, the benchmark's parameters, the method (``method``:
repetitions, foreign-load limit, how many repetitions were excluded), one record per
repetition (``repetitions``: order, load average at start and end, foreign load, excluded),
every value of every variant (``results[variant]["reps"]``) with the median over the kept
repetitions, the ratios and one entry per target (status and why). The timing itself is in
``benchmarks.harness``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.provenance import provenance

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_KEYS = ("name", "command", "provenance", "machine", "versions", "params", "method", "repetitions",
               "results", "ratios", "targets", "notes", "wall_s")
PACKAGES = ("tensorflow", "keras", "jax", "numpy", "pillow", "scipy", "prefect", "dvc", "psutil")


def bench_root() -> Path:
    """Where generated data and throwaway workspaces live (never under the repo)."""
    root = Path(os.environ.get("TAGSMITH_BENCH_DIR", Path(tempfile.gettempdir()) / "tagsmith-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@functools.lru_cache(maxsize=1)
def run_provenance() -> dict[str, Any]:
    """The checkout's commit and dirt, taken once per process (at the start of the run)."""
    return provenance(PROJECT)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which may be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """CPU, cores, memory and the load average now (the machine is shared: it matters)."""
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem_gb = None
    gpus = []
    if "tensorflow" in sys.modules:
        gpus = [d.name for d in sys.modules["tensorflow"].config.list_physical_devices("GPU")]
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "usable_cores": usable_cores(), "memory_gb": mem_gb, "gpus": gpus,
            "loadavg_at_start": harness.loadavg()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def method(measured: harness.Measured | dict[str, harness.Measured] | None) -> tuple[dict, Any]:
    """The ``method`` block and the ``repetitions`` records of one or several interleaved runs."""
    if measured is None:
        return {"interleaved": False, "reps": 1, "excluded_reps": 0, "why": "deterministic: one run is the result"}, []
    groups = measured if isinstance(measured, dict) else {"": measured}
    first = next(iter(groups.values()))
    block = {"interleaved": True, "rotating_order": True, "reps": len(first.reps),
             "max_foreign_load": first.max_foreign_load,
             "excluded_reps": sum(m.excluded for m in groups.values()),
             "ceiling_tolerance": harness.CEILING_TOLERANCE,
             "judged_on": "the median of per-repetition ratios over the repetitions kept"}
    reps = first.reps if not isinstance(measured, dict) else {k: m.reps for k, m in groups.items()}
    return block, reps


def write_result(name: str, command: str, params: dict[str, Any], results: dict[str, Any],
                 ratios: dict[str, Any], targets: list[dict[str, Any]], notes: list[str],
                 machine_info: dict[str, Any], started: float, out_dir: Path = RESULTS,
                 measured: harness.Measured | dict[str, harness.Measured] | None = None,
                 extra: dict[str, Any] | None = None, prov: dict[str, Any] | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (sorted keys) and return its path.

    ``prov`` replaces this checkout's provenance (``run_provenance()``) where the code ran from
    a copy without ``.git`` whose commit was recorded when it was sent (benchmarks/gpu_jax.py).
    """
    machine_info = {**machine_info, "loadavg_at_end": harness.loadavg()}
    block, reps = method(measured)
    report = {"name": name, "command": command, "provenance": prov or run_provenance(), "machine": machine_info,
              "versions": versions(), "params": params, "method": block, "repetitions": reps,
              "results": results, "ratios": ratios, "targets": targets, "notes": notes,
              "wall_s": round(time.perf_counter() - started, 1), **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(report, sort_keys=True, indent=2) + "\n")
    return path
