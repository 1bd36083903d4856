"""The bridge between ``dvc.yaml`` and the Prefect flow: one DAG, one fingerprint.

A stage's fingerprint is DVC's own run-cache key for it: the hash of its command, the hashes
of its deps and the values of its params, as DVC would write them to ``dvc.lock`` (outs
reduced to their paths). So "Prefect says Cached" and "DVC has this run in its run-cache" are
the same statement, and a flow run and ``dvc repro`` always agree on what is stale.

Everything here is in-process DVC (its state database makes re-hashing unchanged files
cheap) or a ``dvc repro --single-item`` subprocess; TensorFlow is never imported, so a
fully cached flow re-run stays close to the cost of a no-op ``dvc repro``.

    python -m flows.bridge.stages            # print each stage's fingerprint and whether it is current
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from tasks.common.errors import TagsmithError
from tasks.common.noise import is_noise

DATA_SOURCE = "data.dvc"  # the raw dataset, tracked by `dvc add data`
# What a stage process learns about itself (read by tasks/checkpoints.stage_fingerprint)
STAGE_ENV, FINGERPRINT_ENV = "TAGSMITH_STAGE", "TAGSMITH_STAGE_FINGERPRINT"

# What `dvc repro --single-item` printed decides what happened to the stage.
_OUTCOMES = (
    ("ran", re.compile(r"^Running stage '(?P<stage>[^']+)'")),
    ("restored", re.compile(r"^Stage '(?P<stage>[^']+)' is cached - skipping run")),
    ("unchanged", re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")),
)

# DVC's advice to a person at a terminal (git add dvc.lock, autostage, dvc push): in a flow the
# flow itself pushes, and a workspace clone is never committed, so it only misleads there.
_HINTS = re.compile(r"^(To track the changes with git, run:|To enable auto staging, run:|\s+git add |"
                    r"\s+dvc config core\.autostage|Use `dvc push` to send your updates)")


class StageError(TagsmithError, RuntimeError):
    """A stage failed or the pipeline definition is not what the flow expects."""


@dataclass(frozen=True)
class StageRun:
    """What one stage run left behind: its dvc.lock entry is the stage's whole result."""

    stage: str
    fingerprint: str
    outcome: str  # ran | restored | unchanged
    lock: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "fingerprint": self.fingerprint, "outcome": self.outcome, "lock": self.lock}


def pipeline(root: Path) -> list[str]:
    """Stage names in ``dvc.yaml`` order; an error if a stage depends on a later one.

    The flow runs stages in this order, so the file order must be a topological order.
    """
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    stages: dict[str, Any] = spec.get("stages") or {}
    names = list(stages)

    def outs(stage: str) -> list[str]:
        return [o if isinstance(o, str) else next(iter(o)) for o in stages[stage].get("outs", [])]

    for i, name in enumerate(names):
        later = [o for other in names[i + 1 :] for o in outs(other)]
        for dep in stages[name].get("deps", []):
            if any(dep == o or dep.startswith(o.rstrip("/") + "/") for o in later):
                raise StageError(f"dvc.yaml: stage '{name}' depends on '{dep}', made by a later stage")
    return names


# Roots inside ``session()``: their open repository (None until first used, or after a dvc
# subprocess may have changed dvc.lock, outputs or config).
_SESSIONS: dict[Path, Any] = {}
# dvc.yaml's stages, collected once per open session repository: collecting one stage parses
# dvc.yaml and dvc.lock again (a tenth of a second each, for every stage of a cached run). Each
# is handed out once, because checking a stage changes it (``save_deps`` records today's hashes).
_COLLECTED: dict[Path, dict[str, Any]] = {}


@contextmanager
def session(root: Path) -> Iterator[None]:
    """Share one open DVC repository between the checks made on ``root`` inside this block.

    Opening a repository and collecting its stages costs a noticeable part of a fully cached
    flow run, which checks every stage; outside a session each check opens its own, so a
    caller that edits the workspace between checks always sees the edit.
    """
    key = Path(root).resolve()
    _SESSIONS[key] = None
    try:
        yield
    finally:
        _forget(key)
        _SESSIONS.pop(key, None)


def _forget(root: Path) -> None:
    key = Path(root).resolve()
    _COLLECTED.pop(key, None)
    repo = _SESSIONS.get(key)
    if repo is not None:
        repo.close()
        _SESSIONS[key] = None


@contextmanager
def _repo(root: Path) -> Iterator[Any]:
    from dvc.repo import Repo

    key = Path(root).resolve()
    if key not in _SESSIONS:
        with Repo(os.fspath(key)) as repo:
            yield repo
        return
    if _SESSIONS[key] is None:
        _SESSIONS[key] = Repo(os.fspath(key))
    yield _SESSIONS[key]


def _target(root: Path, name: str) -> str:
    """``name`` (a dvc.yaml stage, or a ``.dvc`` file) as a DVC target inside ``root``: DVC
    resolves a bare name against the current directory, which need not be ``root``."""
    root = Path(root).resolve()
    return str(root / name) if name.endswith(".dvc") else f"{root / 'dvc.yaml'}:{name}"


def _collect(repo: Any, root: Path, name: str) -> Any:
    """Stage ``name`` as loaded now (from the session's one collection when there is one)."""
    key = Path(root).resolve()
    if key in _SESSIONS and not name.endswith(".dvc"):
        if key not in _COLLECTED:
            _COLLECTED[key] = {s.name: s for s in repo.stage.collect(str(key / "dvc.yaml"))}
        if name in _COLLECTED[key]:
            return _COLLECTED[key].pop(name)
    return repo.stage.collect(_target(root, name))[0]


# The fingerprint of an ``always_changed`` stage (resolve_production): DVC keeps no run-cache
# for such a stage, so there is nothing to key a cache on; the flow runs it every time.
ALWAYS = "always-changed"


def _stage_hash(stage: Any, name: str) -> str:
    from dvc.stage.cache import _can_hash, _get_stage_hash

    if stage.always_changed:
        return ALWAYS
    stage.save_deps()
    if not _can_hash(stage):
        missing = [str(d) for d in stage.deps if not d.exists]
        raise StageError(f"stage '{name}' cannot be fingerprinted; missing deps: {missing or 'none'}")
    return str(_get_stage_hash(stage))


def fingerprint(root: Path, name: str) -> str:
    """DVC's run-cache key of ``name`` for the workspace as it is now (deps hashed on disk);
    ``ALWAYS`` for an ``always_changed`` stage."""
    with _repo(root) as repo, repo.lock:
        return _stage_hash(_collect(repo, root, name), name)


def inspect(root: Path, name: str) -> tuple[str, bool]:
    """``(fingerprint(root, name), is_current(root, name))``, opening the repository once.

    Each dep is hashed once: ``Stage.changed()`` would hash again what the fingerprint just
    hashed. The deps' part of it is the same comparison (dvc.lock's hash against today's); the
    command and the outputs are checked by DVC's own ``changed_stage`` and ``changed_outs``.
    """
    with _repo(root) as repo, repo.lock:
        stage = _collect(repo, root, name)
        if stage.always_changed:
            return ALWAYS, False
        recorded = [dep.hash_info for dep in stage.deps]  # as dvc.lock has them
        key = _stage_hash(stage, name)  # puts today's hashes in the deps
        same_deps = stage.frozen or (not stage.is_callback and all(
            was and dep.hash_info == was for dep, was in zip(stage.deps, recorded)))
        return key, same_deps and not stage.changed_stage() and not stage.changed_outs()


def is_current(root: Path, name: str) -> bool:
    """True when ``dvc status`` would call ``name`` up to date (deps, params, cmd and outs)."""
    with _repo(root) as repo, repo.lock:
        return not _collect(repo, root, name).changed()


def lock_entry(root: Path, name: str) -> dict[str, Any]:
    """The stage's entry in ``dvc.lock`` (empty if it never ran)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    return dict((yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(name, {}))


def dvc_env() -> dict[str, str]:
    """Environment for dvc subprocesses: stage commands say ``python``, meaning this one."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # every stage is a fresh interpreter: reusing compiled bytecode saves seconds per stage
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def has_remote(root: Path) -> bool:
    """Whether a default DVC remote is configured (then runs pull from and push to it)."""
    with _repo(root) as repo:  # in-process: a `dvc remote default` subprocess costs ~0.5 s
        return bool(repo.config.get("core", {}).get("remote"))


def dvc(root: Path, *args: str, log: Callable[[str], None] = print,
        env: dict[str, str] | None = None) -> list[str]:
    """Run ``dvc <args>`` in ``root`` (``env``: extra variables), streaming its output lines to
    ``log``; raise on failure."""
    _forget(root)  # whatever it changes, the next check reads afresh
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args], cwd=root, env={**dvc_env(), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        # progress bars redraw with \r; keep the last state of each line
        line = line.split("\r")[-1]
        if line.strip():
            lines.append(line)
            if not _HINTS.match(line) and not is_noise(line):
                log(line)
    if proc.wait() != 0:
        tail = "\n".join(lines[-15:])
        raise StageError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return lines


def repro(root: Path, name: str, *, pull: bool = False, force: bool = False,
          log: Callable[[str], None] = print, env: dict[str, str] | None = None) -> StageRun:
    """Bring stage ``name`` up to date exactly as ``dvc repro --single-item`` does.

    DVC skips it when unchanged, restores it from the run-cache (local, or the remote with
    ``pull``) when it has seen these inputs before, and runs its command otherwise; ``force``
    runs it regardless. ``env``: extra variables for the stage (never part of its fingerprint).
    """
    key = fingerprint(root, name)
    if key == ALWAYS:
        return _repro_always(root, name, log)
    args = ["repro", "--single-item", name] + (["--pull"] if pull else []) + (["--force"] if force else [])
    # the stage keys its shared checkpoints on this fingerprint (tasks/model/checkpoints.py)
    lines = dvc(root, *args, log=log, env={**(env or {}), STAGE_ENV: name, FINGERPRINT_ENV: key})
    outcome = "unchanged"
    for line in lines:
        for label, pattern in _OUTCOMES:
            m = pattern.match(line)
            if m and m.group("stage") == name:
                outcome = label
    return StageRun(stage=name, fingerprint=key, outcome=outcome, lock=lock_entry(root, name))


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so child processes too) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("wb") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(name)
    saved = logger.propagate
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = saved


def _repro_always(root: Path, name: str, log: Callable[[str], None]) -> StageRun:
    """``dvc repro --single-item name`` for an ``always_changed`` stage, run by DVC in this process.

    Such a stage runs on every flow run, cached or not; a ``dvc`` subprocess would add its
    interpreter start and imports (most of a second) to every fully cached re-run. Its
    output still reaches ``log``, and a failure raises ``StageError`` with the output's tail.
    """
    from dvc.exceptions import DvcException

    with tempfile.TemporaryDirectory() as tmp, _repo(root) as repo:
        out = Path(tmp) / "out"
        failed: Exception | None = None
        try:
            # DVC's own log records would reach the flow's log handlers (and the captured
            # stderr) twice over; what it says for a person is written to stdout anyway
            with _output_to(out), _quiet_logger("dvc"):
                repo.reproduce(_target(root, name), single_item=True, run_env={**dvc_env(), STAGE_ENV: name})
        except DvcException as e:
            failed = e
        lines = [ln.split("\r")[-1] for ln in out.read_text(errors="replace").splitlines()]
    _forget(root)  # it rewrote dvc.lock and its outputs
    lines = [ln for ln in lines if ln.strip()]
    for line in lines:
        if not _HINTS.match(line) and not is_noise(line):
            log(line)
    if failed is not None:
        tail = "\n".join(lines[-15:])
        raise StageError(f"`dvc repro --single-item {name}` failed: {failed}\n{tail}")
    return StageRun(stage=name, fingerprint=ALWAYS, outcome="ran", lock=lock_entry(root, name))


WORKSPACE_MARK = "tagsmith.workspace"  # git config key prepare_workspace sets in the clones it makes


def in_workspace(root: Path) -> bool:
    """Whether ``root`` is a clone ``prepare_workspace`` made (a deployment's run)."""
    mark = subprocess.run(["git", "config", "--get", WORKSPACE_MARK], cwd=root, capture_output=True, text=True)
    return mark.stdout.strip() == "true"


def experiment_ref(root: Path, name: str) -> str:
    """The git ref ``save_experiment(root, name)`` will create: DVC's ``refs/exps/<ab>/<cdef...>/<name>``
    under the commit checked out now. Known before the stages run, so publish can record it."""
    from dvc.repo.experiments.refs import ExpRefInfo

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    return str(ExpRefInfo(baseline_sha=head.stdout.strip(), name=name))


def _data_files(root: Path) -> list[str]:
    """The .dvc files of a sliced source (new slices' files are untracked until saved)."""
    found = [root / "data/classes.txt.dvc", *sorted((root / "data/slices").glob("*.dvc"))]
    return [p.relative_to(root).as_posix() for p in found if p.exists()]


def save_experiment(root: Path, name: str, log: Callable[[str], None] = print) -> str:
    """Record the workspace as DVC experiment ``name``: params.yaml, ``dvc.lock``, the data
    version (data.dvc or the slices' .dvc files), data.splits.tsv and the metrics.

    In a workspace that ``prepare_workspace`` cloned, the experiment is also pushed (git ref,
    plus outputs to the DVC remote when one is configured) to ``origin``, the repository it was
    cloned from, so ``dvc exp show`` there lists it beside the others. Returns its git ref.
    """
    untracked = [arg for path in ["dvc.lock", *_data_files(root)] for arg in ("--include-untracked", path)]
    dvc(root, "exp", "save", "--force", "--name", name, *untracked, log=log)
    if in_workspace(root):
        cache = [] if has_remote(root) else ["--no-cache"]
        dvc(root, "exp", "push", "--force", *cache, "origin", name, log=log)
    return experiment_ref(root, name)


def sync_data_source(root: Path, log: Callable[[str], None] = print) -> bool:
    """Bring the data version up to date; True if it changed. A workspace that follows a sliced
    source (``tagsmith data track``) imports the source's new slices; otherwise a changed
    ``data/`` is recorded in ``data.dvc``, as ``dvc repro`` does."""
    from tasks.datasource import tracking

    if tracking.tracked_source(root):
        _forget(root)
        return bool(tracking.update(root, log=log))
    if not (root / DATA_SOURCE).exists() or is_current(root, DATA_SOURCE):
        return False
    log(f"{DATA_SOURCE}: data/ changed since it was last versioned; recording the new version")
    dvc(root, "commit", "--force", DATA_SOURCE, log=log)
    return True


if __name__ == "__main__":
    here = Path.cwd()
    for stage_name in pipeline(here):
        try:
            key, current = inspect(here, stage_name)
            print(f"{stage_name:14s} {key[:16]}  current={current}")
        except StageError as e:
            print(f"{stage_name:14s} -  ({e})")
