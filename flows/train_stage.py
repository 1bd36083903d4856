"""One dvc.yaml stage, run on the pool this flow is deployed to (the GPU pool).

The retrain flow dispatches its placed stages here (flows/bridge/placement.py) with
``run_deployment``; each run works in its own clone of the deployed commit (the pull step
``prepare_workspace``). It makes the clone hold the parent's params and upstream ``dvc.lock``
entries, pulls the upstream outputs from the DVC remote, and checks that DVC computes the very
fingerprint the parent holds: if not, the two deployments run different code or data, and
training the wrong thing would be worse than stopping. Then ``dvc repro --single-item`` (which
resumes from the stage's shared checkpoints, tasks/model/checkpoints.py) and a push of the
outputs and the run-cache entry, from which the parent restores the stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402

from flows.bridge import placement, stages  # noqa: E402


@task(retries=3, retry_delay_seconds=[5, 20, 60])
def pull_inputs(workspace: str, upstream: list[str]) -> None:
    """Fetch the upstream stages' outputs from the DVC remote (I/O: retried)."""
    stages.dvc(Path(workspace), "pull", *upstream, log=get_run_logger().info)


@task
def repro(stage: str, workspace: str) -> dict[str, Any]:
    """``dvc repro --single-item --pull``: restored if the remote run-cache has it, else run."""
    return stages.repro(Path(workspace), stage, pull=True, log=get_run_logger().info).to_dict()


@task(retries=3, retry_delay_seconds=[5, 20, 60])
def push_outputs(stage: str, workspace: str) -> None:
    """Push the stage's outputs and run-cache entry, which the parent restores (I/O: retried)."""
    stages.dvc(Path(workspace), "push", "--run-cache", stage, log=get_run_logger().info)


@flow(name="train-stage", log_prints=True)
def train_stage(stage: str, fingerprint: str, params: str, locks: dict[str, Any],
                files: dict[str, str] | None = None, workspace: str = ".") -> dict[str, Any]:
    """Run one dvc.yaml stage for a retrain run elsewhere; its result is the stage's dvc.lock entry.

    Args:
        stage: the dvc.yaml stage (train_frozen, train_full, evaluate).
        fingerprint: DVC's run-cache key of the stage in the parent's workspace; must match here.
        params: the parent's params.yaml text (its overrides included).
        locks: dvc.lock entries of the upstream stages whose outputs the stage reads.
        files: upstream outputs DVC does not cache, by path.
        workspace: the clone to run in.
    """
    root = Path(workspace).resolve()
    log = get_run_logger()
    placement.require_remote(root, "this pool")
    placement.receive(root, params, locks, files or {})
    if locks:
        pull_inputs.with_options(task_run_name=f"pull-inputs-{stage}")(str(root), list(locks))
    here = stages.fingerprint(root, stage)
    if here != fingerprint:
        raise placement.PlacementError(
            f"{stage}: fingerprint here {here} differs from the retrain run's {fingerprint}: this "
            "deployment runs another commit (code) or got other inputs; redeploy both from one commit")
    log.info("%s: fingerprint %s matches; running it on this pool", stage, fingerprint[:16])
    result = repro.with_options(name=stage, task_run_name=stage)(stage, str(root))
    push_outputs.with_options(task_run_name=f"push-{stage}")(stage, str(root))
    return result

