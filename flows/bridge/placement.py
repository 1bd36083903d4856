"""Stage placement: the training stages on a GPU pool, everything else where the flow runs.

The retrain flow runs on the pool it is deployed to (CPU). A placed stage is handed to a run of
the ``train-stage`` deployment (flows/train_stage.py), which its own pool runs in a fresh clone
of the deployed commit. What crosses over is only what makes the clone reproduce the stage's
fingerprint: the parent's ``params.yaml``, the ``dvc.lock`` entries of the upstream stages
whose outputs it reads (their data goes through the DVC remote), and the files of upstream
outputs DVC does not cache (resolve_production's small JSON). The child runs
``dvc repro --single-item``, pushes outputs and run-cache; the parent then restores the stage
from the run-cache, exactly as for a stage another worker computed.

With no deployment configured (flow parameter ``gpu_deployment``, else ``TAGSMITH_GPU_DEPLOYMENT``)
nothing is placed and every stage runs in-process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import yaml

from flows.bridge import stages
from flows.bridge.stages import StageError

ENV_DEPLOYMENT = "TAGSMITH_GPU_DEPLOYMENT"
ENV_ZOMBIE_AFTER = "TAGSMITH_ZOMBIE_AFTER_S"
TRAINING = ("train_frozen", "train_full")
ZOMBIE_AUTOMATION = "tagsmith: crash flow runs that stopped beating"
# No heartbeat for this long: the run's process is gone. Prefect 3.9 flow runs beat every 180 s
# by default (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, on every pool); this must stay well above that.
# The default; TAGSMITH_ZOMBIE_AFTER_S overrides it (zombie_after_s).
ZOMBIE_AFTER_S = 600


class PlacementError(StageError):
    """A stage cannot be placed on, or did not come back from, its pool."""


def placed_stages(deployment: str | None, evaluate: bool = False) -> tuple[str | None, frozenset[str]]:
    """The deployment placed stages go to (the parameter, else the environment) and which stages."""
    chosen = deployment or os.environ.get(ENV_DEPLOYMENT) or None
    if not chosen:
        return None, frozenset()
    if "/" not in chosen:
        raise PlacementError(f"gpu_deployment {chosen!r}: expected FLOW/DEPLOYMENT, e.g. train-stage/train-stage-gpu")
    return chosen, frozenset(TRAINING + (("evaluate",) if evaluate else ()))


def require_remote(root: Path, deployment: str) -> None:
    """Refuse placement without a DVC remote: the other pool's clone could not get the inputs."""
    if not stages.has_remote(root):
        raise PlacementError(
            f"stages placed on {deployment} need a DVC remote (their worker gets inputs and returns "
            "outputs through it), and this workspace has none: `dvc remote add -d NAME s3://...`, "
            f"or unset gpu_deployment / {ENV_DEPLOYMENT} to run every stage here")


def _outs(spec: dict[str, Any]) -> list[tuple[str, bool]]:
    """A stage's outputs as (path, cached)."""
    out = []
    for o in spec.get("outs", []):
        path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
        out.append((path.rstrip("/"), (opts or {}).get("cache", True)))
    return out


def upstream(root: Path, name: str) -> tuple[list[str], list[str]]:
    """(earlier stages whose cached outputs ``name`` reads, deps of ``name`` inside uncached outputs)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    names = list(spec)
    cached, files = [], []
    for other in names[: names.index(name)]:
        for path, cache in _outs(spec[other]):
            for dep in spec[name].get("deps", []):
                dep = dep.rstrip("/")
                if dep == path or dep.startswith(path + "/") or path.startswith(dep + "/"):
                    if cache and other not in cached:
                        cached.append(other)
                    elif not cache:
                        files.append(dep if dep.startswith(path) else path)
    return cached, files


def handoff(root: Path, name: str, fingerprint: str) -> dict[str, Any]:
    """The parameters of the ``train-stage`` run that reproduces ``name`` with this fingerprint."""
    ups, paths = upstream(root, name)
    locks = {u: stages.lock_entry(root, u) for u in ups}
    if missing := [u for u, entry in locks.items() if not entry]:
        raise PlacementError(f"{name}: upstream stages {missing} have no dvc.lock entry here; run them first")
    files: dict[str, str] = {}
    for rel in paths:
        p = root / rel
        for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
            files[f.relative_to(root).as_posix()] = f.read_text()
    return {"stage": name, "fingerprint": fingerprint, "params": (root / "params.yaml").read_text(),
            "locks": locks, "files": files}


def receive(root: Path, params: str, locks: dict[str, Any], files: dict[str, str]) -> None:
    """Make a fresh clone hold what the parent's workspace held for the stage (not the data)."""
    (root / "params.yaml").write_text(params)
    for rel, text in files.items():
        target = (root / rel).resolve()
        if not target.is_relative_to(root.resolve()):
            raise PlacementError(f"handoff file {rel!r} lies outside the workspace")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    lock = root / "dvc.lock"
    doc = (yaml.safe_load(lock.read_text()) if lock.exists() else None) or {}
    doc.setdefault("schema", "2.0")
    doc.setdefault("stages", {}).update(locks)
    lock.write_text(yaml.safe_dump(doc, sort_keys=False))


def zombie_after_s() -> int:
    """Seconds without a heartbeat after which a flow run counts as dead: ``TAGSMITH_ZOMBIE_AFTER_S``,
    else ZOMBIE_AFTER_S. Below Prefect's fastest heartbeat (30 s) every live run would be crashed."""
    value = os.environ.get(ENV_ZOMBIE_AFTER, "").strip()
    if not value:
        return ZOMBIE_AFTER_S
    if not value.isdigit() or int(value) <= 30:
        raise PlacementError(f"{ENV_ZOMBIE_AFTER}={value!r}: expected whole seconds above 30, "
                             "longer than the flow runs' heartbeat period (PREFECT_FLOWS_HEARTBEAT_FREQUENCY)")
    return int(value)


def ensure_zombie_automation() -> None:
    """Create (once per server) the automation that marks a flow run Crashed when its heartbeats stop.

    A worker killed with its flow run (spot reclaim, node drain, SIGKILL) never reports a final
    state: the run would stay Running and the parent wait forever. Flow runs send heartbeat
    events; when one is followed by neither another nor a final state within zombie_after_s(),
    this marks the run Crashed, so the parent's dispatch fails and Prefect retries it. The
    threshold is the one of the run that creates it; an existing automation is left as it is.
    """
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    silence = zombie_after_s()  # a malformed setting fails every placed run, not only the first
    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed",
                                    message=f"No heartbeat for {silence} s: the flow run's process is gone")],
    ).create()


def dispatch(root: Path, deployment: str, name: str, fingerprint: str,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run stage ``name`` as a run of ``deployment`` and restore its outputs here; its result.

    Must be called inside a task: the child run is then shown as that task's subflow.
    Raises PlacementError when the child run does not complete (the caller's retries re-dispatch).
    """
    from prefect.deployments import run_deployment

    require_remote(root, deployment)
    payload = handoff(root, name, fingerprint)
    if payload["locks"]:  # outputs restored from a local cache may never have reached the remote
        stages.dvc(root, "push", *payload["locks"], log=log)
    child = run_deployment(deployment, parameters=payload, as_subflow=True,
                           flow_run_name=f"{name}-{fingerprint[:12]}", tags=["tagsmith", "placed-stage"])
    state = child.state
    if state is None or not state.is_completed():
        raise PlacementError(f"{name}: run {child.name} of {deployment} ended "
                             f"{state.name if state else 'without a state'}: {state.message if state else ''}")
    log(f"{name}: ran on pool {child.work_pool_name} as {child.name}; restoring its outputs from the DVC run-cache")
    run = stages.repro(root, name, pull=True, log=log)
    if run.fingerprint != fingerprint:
        raise PlacementError(f"{name}: fingerprint changed while it ran elsewhere ({fingerprint} -> {run.fingerprint})")
    if run.outcome == "ran":  # the run-cache entry did not come back: it ran here as well
        log(f"{name}: WARNING the remote run-cache lacked {child.name}'s result; it ran here too")
    return {**run.to_dict(), "outcome": "ran",
            "placed": {"deployment": deployment, "flow_run": child.name, "work_pool": child.work_pool_name}}
