"""The one method every benchmark uses: interleaved repetitions, load records, judged ratios.

* Variants run interleaved, once per repetition, the order rotating each repetition, so a
  load spike hits every variant and no variant always goes first (cold caches).
* Each repetition records the 1/5/15-min load average at its start and end, and the *foreign
  load*: the cores' worth of CPU that other processes used while it ran (busy CPU time of the
  cores this process may use, minus this process tree's, over the wall time; steal time
  counts as foreign). The load average cannot judge a repetition by itself: it counts the
  benchmark's own threads, so a 2-thread benchmark on a quiet 2-core machine drives it to 2.
* A repetition whose foreign load exceeds the limit (``max_foreign_load``, default a quarter
  of the cores; ``--max-foreign-load`` / ``TAGSMITH_BENCH_MAX_FOREIGN_LOAD``) is kept in the
  file but excluded from every judged figure; the summary says how many were.
* Ratios come two ways, of the medians and as the median of per-repetition ratios (two runs
  back to back under the same load); targets are judged on the paired one.
* A ratio of "ours" to its own ceiling above ``CEILING_TOLERANCE`` (either way of computing
  it) means the ceiling does not bound what it claims to: the target is INVALID, not met.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

CEILING_TOLERANCE = 1.05
MIN_REPS = 3
STATUSES = ("met", "missed", "invalid", "not judged")


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def default_max_foreign_load() -> float:
    """``TAGSMITH_BENCH_MAX_FOREIGN_LOAD`` if set, else a quarter of the cores."""
    env = os.environ.get("TAGSMITH_BENCH_MAX_FOREIGN_LOAD")
    return float(env) if env else round(0.25 * (os.cpu_count() or 1), 2)


def _own_cpu_s() -> float:
    """CPU seconds of this process and its children (reaped ones and those still running)."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                c = child.cpu_times()
                own += c.user + c.system
            except psutil.Error:
                pass
    except ImportError:
        pass
    return own


def _busy_cpu_s() -> float | None:
    """Busy CPU seconds of the cores this process may use (steal included), or None where unknown.

    Only those cores: on a machine where this process is pinned to some, work on the others
    does not compete with it.
    """
    try:
        import psutil
    except ImportError:
        return None
    per_cpu = psutil.cpu_times(percpu=True)
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:
        mine = range(len(per_cpu))
    return sum(getattr(per_cpu[i], f, 0.0) for i in mine if i < len(per_cpu)
               for f in ("user", "nice", "system", "irq", "softirq", "steal"))


class Probe:
    """Load figures around one repetition: ``Probe()`` at its start, ``.finish()`` at its end."""

    def __init__(self) -> None:
        self.load = loadavg()
        self.wall, self.own, self.busy = time.perf_counter(), _own_cpu_s(), _busy_cpu_s()

    def finish(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        busy = _busy_cpu_s()
        foreign = None
        if busy is not None and self.busy is not None:
            foreign = round(max(0.0, (busy - self.busy) - (_own_cpu_s() - self.own)) / wall, 2)
        return {"loadavg_start": self.load, "loadavg_end": loadavg(), "foreign_load": foreign,
                "wall_s": round(wall, 2)}


@dataclass
class Measured:
    """Every value of every variant in repetition order, and one record per repetition."""

    values: dict[str, list[float]]
    reps: list[dict[str, Any]]
    max_foreign_load: float
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def kept_index(self) -> list[int]:
        return [i for i, r in enumerate(self.reps) if not r["excluded"]]

    @property
    def excluded(self) -> int:
        return len(self.reps) - len(self.kept_index)

    def series(self, name: str) -> list[float]:
        return self.values[name] if name in self.values else self.extra[name]

    def kept(self, name: str) -> list[float]:
        """The values of ``name`` from the repetitions that count."""
        values = self.series(name)
        return [values[i] for i in self.kept_index]


def classify(rep: dict[str, Any], max_foreign_load: float) -> dict[str, Any]:
    """Mark ``rep`` excluded when other processes used more than ``max_foreign_load`` cores."""
    foreign = rep.get("foreign_load")
    over = foreign is not None and foreign > max_foreign_load
    why = f"foreign load {foreign} > {max_foreign_load} cores" if over else ""
    return {**rep, "excluded": over, "why": why}


def rotation(names: Sequence[str], rep: int) -> list[str]:
    """The order of repetition ``rep`` (0-based): the list rotated left by ``rep``."""
    k = rep % len(names)
    return list(names[k:]) + list(names[:k])


def interleave(variants: dict[str, Callable[[], float]], reps: int, *,
               max_foreign_load: float | None = None,
               log: Callable[[str], None] = print) -> Measured:
    """Run every variant once per repetition, rotating the order, recording the load.

    Args:
        variants: name -> a function doing one measured run and returning its number.
        reps: repetitions (committed results need at least ``MIN_REPS``; run.py checks).
        max_foreign_load: cores other processes may use before a repetition is excluded
            (default: ``default_max_foreign_load()``).
        log: progress output.
    """
    limit = default_max_foreign_load() if max_foreign_load is None else max_foreign_load
    names = list(variants)
    out: dict[str, list[float]] = {n: [] for n in names}
    records = []
    for rep in range(reps):
        order = rotation(names, rep)
        probe = Probe()
        for name in order:
            out[name].append(variants[name]())
            log(f"  rep {rep + 1}/{reps} {name}: {out[name][-1]:.3f}")
        record = classify({"rep": rep + 1, "order": order, **probe.finish()}, limit)
        if record["excluded"]:
            log(f"  rep {rep + 1}/{reps} EXCLUDED from the judged figures: {record['why']}")
        records.append(record)
    return Measured(out, records, limit)


def summarize(values: list[float], unit: str, digits: int = 3,
              kept: Sequence[int] | None = None) -> dict[str, Any]:
    """``{"unit", "reps": all values, "kept": n, "median", "min", "max"}`` (over the kept reps)."""
    idx = range(len(values)) if kept is None else kept
    used = [values[i] for i in idx]
    stats = ({"median": round(statistics.median(used), digits), "min": round(min(used), digits),
              "max": round(max(used), digits)} if used else {"median": None, "min": None, "max": None})
    return {"unit": unit, "reps": [round(v, digits) for v in values], "kept": len(used), **stats}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def paired(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Median over repetitions of ``a[i] / b[i]``: the two ran back to back under the same load.

    The load can change by 2x between repetitions on a shared machine; the ratio of two
    adjacent runs cancels that, the ratio of the two medians does not.
    """
    pairs = [x / y for x, y in zip(a, b) if y]
    return round(statistics.median(pairs), 3) if pairs else None


def compare(ratios: dict[str, Any], name: str, num: Sequence[float], den: Sequence[float]) -> float | None:
    """Record ``name`` (ratio of medians) and ``name_paired`` in ``ratios``; return the paired one."""
    ratios[name] = ratio(statistics.median(num), statistics.median(den)) if num and den else None
    ratios[f"{name}_paired"] = paired(num, den)
    return ratios[f"{name}_paired"]


def ceiling_check(name: str, ours: Sequence[float], ceiling: Sequence[float]) -> dict[str, Any]:
    """Does ``ceiling`` bound ``ours``? Both ratios (paired, of medians) must be <= the tolerance."""
    r = {"paired": paired(ours, ceiling),
         "of_medians": ratio(statistics.median(ours), statistics.median(ceiling)) if ours and ceiling else None}
    worst = max((v for v in r.values() if v is not None), default=None)
    return {"name": name, **r, "worst": worst, "tolerance": CEILING_TOLERANCE,
            "valid": worst is None or worst <= CEILING_TOLERANCE}


def judge(name: str, value: float | None, goal: str, ok: bool | None, why: str = "",
          ceilings: Sequence[dict[str, Any]] = (), basis: str = "") -> dict[str, Any]:
    """One target: the measured value, the goal, its status and why.

    Status: ``invalid`` when a ceiling check failed (the figure cannot be real), ``not judged``
    when there is no value (e.g. every repetition excluded), else ``met`` / ``missed``.
    ``met`` mirrors it as True / False / None (None unless met or missed).
    """
    broken = [c for c in ceilings if not c["valid"]]
    if broken:
        status = "invalid"
        why = "; ".join(f"{c['name']}: {c['worst']}x its own ceiling (> {c['tolerance']})" for c in broken)
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        status, why = "not judged", why or "no repetition counts (all excluded)"
    else:
        status = "met" if ok else "missed"
    return {"name": name, "value": None if value is None else round(value, 3), "goal": goal,
            "status": status, "met": {"met": True, "missed": False}.get(status), "why": why if status != "met" else "",
            "basis": basis, "ceilings": [c["name"] for c in ceilings]}
