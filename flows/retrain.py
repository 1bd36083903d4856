"""The retraining flow: the stages of ``dvc.yaml``, each a cached Prefect task.

Each task brings one stage up to date with ``dvc repro --single-item`` and is cached on the
stage's fingerprint (DVC's run-cache key: command, dep hashes, param values), never on the
run id or a path. A re-run with nothing changed is all Cached and runs no stage; after a
change only the stages ``dvc repro`` would run, run.

    tagsmith retrain                          # embedded default, temporary Prefect server
    tagsmith retrain --backbone mobilenet_v3_small --epochs-full 5
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.retrain
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Without PREFECT_API_URL Prefect starts a temporary server and gives it 20 s: too few on a busy
# 2-core laptop, where `make demo` then failed before any stage ("Timed out while attempting to
# connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.context import TaskRunContext  # noqa: E402
from prefect.runtime import flow_run as this_run  # noqa: E402

from flows.bridge import placement, report, stages  # noqa: E402
from flows.bridge.overrides import FLOW_PARAMS, apply_overrides, flow_overrides  # noqa: E402
from tasks.common.config import BackboneName, LossName, ResizeMode, WeightsKind  # noqa: E402
from flows.deployment import results  # noqa: E402
from tasks.registry import lineage  # noqa: E402

STAGES = ["resolve_production", "ingest", "augment", "train_frozen", "train_full", "evaluate", "publish"]


def _stage_key(_: TaskRunContext, parameters: dict[str, Any]) -> str:
    # Content only: the stage name and DVC's fingerprint of its inputs.
    return f"tagsmith-{parameters['stage']}-{parameters['fingerprint']}"


@task(cache_key_fn=_stage_key, persist_result=True, result_serializer="json")
def run_stage(stage: str, fingerprint: str, workspace: str, pull: bool = False, force: bool = False,
              env: dict[str, str] | None = None, deployment: str | None = None) -> dict[str, Any]:
    """Bring one dvc.yaml stage up to date; its result is the stage's dvc.lock entry.

    With ``deployment`` the stage runs as a run of it, on its pool (flows/bridge/placement.py);
    ``env`` goes to the stage's process (not to its fingerprint).
    """
    log = get_run_logger()
    if deployment:
        return placement.dispatch(Path(workspace), deployment, stage, fingerprint, log=log.info)
    return stages.repro(Path(workspace), stage, pull=pull, force=force, log=log.info, env=env).to_dict()


@task
def run_always(stage: str, workspace: str, pull: bool = False) -> dict[str, Any]:
    """Run an ``always_changed`` stage (resolve_production): never cached, as in ``dvc repro``."""
    return stages.repro(Path(workspace), stage, pull=pull, log=get_run_logger().info).to_dict()


@task(retries=3, retry_delay_seconds=[5, 20, 60])
def push_stage(stage: str, workspace: str) -> None:
    """Push a stage's outputs and run-cache entry to the DVC remote (I/O: retried)."""
    stages.dvc(Path(workspace), "push", "--run-cache", stage, log=get_run_logger().info)


@task(retries=3, retry_delay_seconds=[5, 20, 60])
def registry_holds_receipt(workspace: str) -> bool:
    """Whether the version publish's receipt names is in the registry (I/O: retried)."""
    return published_version_present(Path(workspace))


@task(retries=2, retry_delay_seconds=[5, 30])
def record_experiment(name: str, workspace: str) -> str:
    """Save the run as a DVC experiment and push it where the workspace came from (I/O: retried);
    returns its git ref."""
    return stages.save_experiment(Path(workspace), name, log=get_run_logger().info)


def published_version_present(root: Path) -> bool:
    """False when publish's receipt says a version is published but the store lacks it.

    publish is cached on its inputs like every stage, so after the registry lost a version
    (bucket wiped, store moved) a re-run would stay Cached and publish nothing.
    """
    from tasks.registry import client as registry
    from tasks.common.config import RegistryConfig, load

    receipt = json.loads((root / report.ARTIFACTS["receipt"]).read_text())
    if not receipt.get("published"):
        return True  # the gate rejected it: nothing should be there
    cfg = load(RegistryConfig, root / "params.yaml")
    uri = cfg.store if "://" in cfg.store else str(root / cfg.store)
    store = registry.open_store(uri, registry.s3_options(cfg))
    return registry.is_complete(store, receipt["model_name"], receipt["version"])


def run_lineage(root: Path, experiment: str | None) -> tuple[str | None, dict[str, str]]:
    """The experiment that will record this run (``experiment``; in a deployment's workspace the
    flow run's name by default), and what publish writes into the version's lineage about the run:
    the experiment's git ref, decided now because publish runs before the ref exists."""
    name = experiment or (this_run.name if stages.in_workspace(root) else None)
    env = {lineage.ENV_RUN_ID: this_run.id or "", lineage.ENV_RUN_NAME: this_run.name or "",
           lineage.ENV_RUN_URL: this_run.ui_url or ""}
    if name:
        try:
            env[lineage.ENV_REF] = stages.experiment_ref(root, name)
        except subprocess.CalledProcessError:  # no commit to base it on: recording it will fail too
            get_run_logger().warning("%s has no git commit: the run cannot be saved as a ref", root)
    return name, {k: v for k, v in env.items() if v}


def stage(root: Path, name: str, *, refresh: bool, remote: bool, force: bool = False,
          env: dict[str, str] | None = None, placed: dict[str, str] | None = None) -> dict[str, Any]:
    """Run stage ``name`` as a cached task, then make sure the workspace holds its outputs.

    ``force`` runs the stage's command even if DVC and Prefect hold it as cached; ``env`` goes to
    its process (not to its fingerprint); ``placed`` maps stages to the deployment they run on
    (absent: here). The cache key is the fingerprint either way, so where a stage ran never
    decides whether it runs again.
    """
    key, current = stages.inspect(root, name)
    if key == stages.ALWAYS:
        return run_always.with_options(name=name, task_run_name=name)(name, str(root), pull=remote)
    run_name = f"{name}-forced" if force else name
    deployment = (placed or {}).get(name) if not force else None
    # a placed stage's run may die with its worker: re-dispatch it (it resumes from its checkpoints)
    retry = {"retries": 2, "retry_delay_seconds": 10} if deployment else {}
    state = run_stage.with_options(name=name, task_run_name=run_name, refresh_cache=refresh or force, **retry)(
        name, key, str(root), pull=remote, force=force, env=env, deployment=deployment, return_state=True)
    result = state.result()  # raises if the stage failed
    if state.name == "Cached" and not current:
        # Cached in Prefect, stale here (e.g. params changed and changed back, or a fresh
        # workspace): DVC restores the outputs from its run-cache without running the stage.
        get_run_logger().info("%s: restoring outputs from the DVC run-cache", name)
        stages.repro(root, name, pull=remote, log=get_run_logger().info)
    if remote and result.get("outcome") == "ran" and not result.get("placed"):  # placed: pushed there
        push_stage.with_options(name=f"push-{name}", task_run_name=f"push-{name}")(name, str(root))
    return result


@flow(name="retrain", log_prints=True, persist_result=True, result_serializer="json")
def retrain(
    backbone: BackboneName | None = None,
    image_size: int | None = None,
    resize: ResizeMode | None = None,
    epochs_frozen: int | None = None,
    epochs_full: int | None = None,
    lr_frozen: float | None = None,
    lr_full: float | None = None,
    weights: WeightsKind | None = None,
    loss: LossName | None = None,
    force_publish: bool | None = None,
    refresh_cache: bool = False,
    experiment: str | None = None,
    params: dict[str, Any] | None = None,
    gpu_deployment: str | None = None,
    gpu_evaluate: bool = False,
    workspace: str = ".",
) -> dict[str, Any]:
    """Retrain, evaluate and publish a multi-label image classifier (the dvc.yaml pipeline).

    Args:
        backbone: the base network, pretrained on ImageNet or from scratch (params.yaml: train_frozen.backbone).
        image_size: input side in pixels (augment.image_size).
        resize: stretch to a square, or pad to keep the aspect ratio (augment.resize).
        epochs_frozen: epochs with the base frozen, head only (train_frozen.epochs).
        epochs_full: epochs fine-tuning all layers (train_full.epochs).
        lr_frozen: learning rate of the head-only phase (train_frozen.learning_rate).
        lr_full: learning rate of the fine-tuning phase (train_full.learning_rate).
        weights: imagenet, none (random), or production (warm start from the published model); a weights file goes in params as {"train_frozen.weights": "path"} (train_frozen.weights).
        loss: bce, asl (asymmetric loss) or weighted_bce, for both phases (train_frozen.loss, train_full.loss).
        force_publish: publish even if the quality gate refuses; recorded as forced (publish.force).
        refresh_cache: ignore Prefect's cache and re-check every stage with DVC.
        experiment: record the run as a DVC experiment of this name (`dvc exp show` in the repository the deployment cloned); a deployment's run always records one, named after the flow run by default, and the published version's lineage names its git ref.
        params: any other params.yaml values, as {"section.key": value}.
        gpu_deployment: run train_frozen and train_full as runs of this deployment, on its pool (e.g. train-stage/train-stage-gpu; default: $TAGSMITH_GPU_DEPLOYMENT; unset: all here). Needs a DVC remote.
        gpu_evaluate: place evaluate there too.
        workspace: the repository checkout to run in.
    """
    root = Path(workspace).resolve()
    if stages.pipeline(root) != STAGES:
        raise stages.StageError(f"dvc.yaml stages {stages.pipeline(root)} differ from the flow's {STAGES}")
    chosen = flow_overrides({k: v for k, v in locals().items() if k in FLOW_PARAMS})
    changed = apply_overrides(root / "params.yaml", {**chosen, **(params or {})})
    results.check(get_run_logger().info)  # where stage caches live; unusable storage fails here
    with stages.session(root):  # one DVC repository open for all the checks below
        return _run_pipeline(root, changed, refresh_cache, experiment, gpu_deployment, gpu_evaluate)


def _run_pipeline(root: Path, changed: dict[str, Any], refresh_cache: bool, experiment: str | None,
                  gpu_deployment: str | None, gpu_evaluate: bool) -> dict[str, Any]:
    """The body of ``retrain`` once params.yaml holds the run's values."""
    stages.sync_data_source(root, log=get_run_logger().info)
    remote = stages.has_remote(root)
    deployment, placed = placement.placed_stages(gpu_deployment, gpu_evaluate)
    if deployment:
        placement.require_remote(root, deployment)
        placement.ensure_zombie_automation()
        get_run_logger().info("placing %s on %s", ", ".join(sorted(placed)), deployment)
    # the data version too, so a fresh workspace elsewhere can check it out (a sliced source's
    # imports are fetched from the source itself)
    if remote and (root / stages.DATA_SOURCE).exists():
        push_stage.with_options(name="push-data", task_run_name="push-data")(stages.DATA_SOURCE, str(root))
    opts = {"refresh": refresh_cache, "remote": remote, "placed": {s: deployment for s in placed}}
    experiment, run_env = run_lineage(root, experiment)

    runs = [
        stage(root, "resolve_production", **opts),  # first: the stages reading the registry key on it
        stage(root, "ingest", **opts),
        stage(root, "augment", **opts),
        stage(root, "train_frozen", **opts),
        stage(root, "train_full", **opts),
        stage(root, "evaluate", **opts),
        stage(root, "publish", env=run_env, **opts),
    ]
    if not registry_holds_receipt.with_options(task_run_name="check-registry")(str(root)):
        get_run_logger().warning("publish: the registry lacks the version the receipt names; publishing again")
        runs[-1] = stage(root, "publish", force=True, env=run_env, **opts)
    receipt = json.loads((root / report.ARTIFACTS["receipt"]).read_text())
    if receipt.get("outcome") == "rejected":  # a decision, not a failure: say why, loudly
        get_run_logger().warning("publish: %s", report.gate_summary(receipt))
    if experiment:
        state = record_experiment.with_options(task_run_name=f"experiment-{experiment}")(
            experiment, str(root), return_state=True)
        if not state.is_completed():  # the model is trained and published; only the record is missing
            get_run_logger().warning("not recorded as DVC experiment %r: %s", experiment, state.message)
    return report.publish_run_report(root, runs, changed)


def main(**kwargs: Any) -> dict[str, Any]:
    """Run ``retrain(**kwargs)`` as a command does (``python -m flows.retrain``, ``tagsmith retrain``).

    Prefect, DVC and pydantic leave about a million objects on the heap. Freezing them keeps
    the cyclic collector from walking them again during the run and at interpreter exit, where
    that walk took a tenth of a fully cached re-run (benchmarks/orchestration.py). Nothing is
    leaked: the process ends right after.
    """
    gc.freeze()
    try:
        return retrain(**kwargs)
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
