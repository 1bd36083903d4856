"""Shared plumbing of the benchmarks: machine facts, interleaved timing, result files.

Every result file has the same top-level shape (``SCHEMA_KEYS``): the exact command, the
machine (CPU, cores, load average at start and end), library versions, the benchmark's
parameters, every repetition of every variant (``results[variant]["reps"]``) with its median,
the ratios derived from the medians and one entry per target (met or missed, and why).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA_KEYS = ("name", "command", "machine", "versions", "params", "results", "ratios", "targets",
               "notes", "wall_s")
PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "scipy", "prefect", "dvc", "psutil")


def bench_root() -> Path:
    """Where generated data and throwaway workspaces live (never under the repo)."""
    root = Path(os.environ.get("TAGSMITH_BENCH_DIR", Path(tempfile.gettempdir()) / "tagsmith-bench"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


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
            "memory_gb": mem_gb, "gpus": gpus, "loadavg_at_start": loadavg()}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def summarize(values: list[float], unit: str, digits: int = 3) -> dict[str, Any]:
    """``{"unit", "reps": [...], "median", "min", "max"}`` for one variant."""
    return {"unit": unit, "reps": [round(v, digits) for v in values],
            "median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def interleave(variants: dict[str, Callable[[], float]], reps: int,
               log: Callable[[str], None] = print) -> tuple[dict[str, list[float]], list[list[float]]]:
    """Run every variant once per repetition, rotating the order each repetition.

    A load spike on the shared machine then hits every variant rather than whichever one
    happened to run at that moment, and no variant always goes first (cold caches).

    Args:
        variants: name -> a function doing one measured run and returning its number.
        reps: repetitions.
        log: progress output.

    Returns:
        (name -> the numbers in repetition order, the load average at the start of each rep).
    """
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    loads = []
    for rep in range(reps):
        loads.append(loadavg())
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            out[name].append(variants[name]())
            log(f"  rep {rep + 1}/{reps} {name}: {out[name][-1]:.3f}")
    return out, loads


def target(name: str, value: float | None, goal: str, met: bool | None, why: str = "") -> dict[str, Any]:
    """One target line: the measured value, the goal in words, met or not, and why."""
    return {"name": name, "value": None if value is None else round(value, 3), "goal": goal,
            "met": met, "why": why}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def paired(a: list[float], b: list[float]) -> float:
    """Median over repetitions of ``a[i] / b[i]``: the two ran back to back under the same load.

    On a shared machine the load can change by 2x between repetitions; the ratio of two
    adjacent runs cancels that, the ratio of the two medians does not. Targets are judged on
    this; the ratio of the medians is reported beside it.
    """
    return round(statistics.median(x / y for x, y in zip(a, b)), 3)


def both(ratios: dict[str, Any], name: str, raw: dict[str, list[float]], med: dict[str, float],
         num: str, den: str) -> float:
    """Record ``name`` (ratio of medians) and ``name_paired``; return the paired one."""
    ratios[name] = ratio(med[num], med[den])
    ratios[f"{name}_paired"] = paired(raw[num], raw[den])
    return ratios[f"{name}_paired"]


def write_result(name: str, command: str, params: dict[str, Any], results: dict[str, Any],
                 ratios: dict[str, Any], targets: list[dict[str, Any]], notes: list[str],
                 machine_info: dict[str, Any], started: float, out_dir: Path = RESULTS,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` (sorted keys) and return its path."""
    machine_info = {**machine_info, "loadavg_at_end": loadavg()}
    report = {"name": name, "command": command, "machine": machine_info, "versions": versions(),
              "params": params, "results": results, "ratios": ratios, "targets": targets,
              "notes": notes, "wall_s": round(time.perf_counter() - started, 1), **(extra or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(report, sort_keys=True, indent=2) + "\n")
    return path
