"""Deployment plumbing: a fresh workspace per flow run, and what a work pool's job renders to.

``infra/prefect.yaml`` names :func:`prepare_workspace` as the pull step of every deployment:
the worker calls it in a directory of the flow run's own (the process worker makes a temporary
one per run; a container starts in its own filesystem), it clones the deployed commit there and
makes the DVC-tracked data present, and Prefect then runs the flow in that clone, so the
flow's ``workspace="."`` is it. Concurrent runs never share a working tree. Prefect's own
``git_clone`` step composes with it (run it first, then ``prepare_workspace`` with no
repository) where its credential blocks are wanted; the default keeps clone, commit pin, data
checkout and shared folders in one step that either yields a complete workspace or one error.

    python -m flows.deployment.deploy render infra/pools/k8s-gpu.json gpu_count=2 'node_selector={"gpu": "a100"}'
        # print the job a worker of that pool would submit for a run, built by the worker's own code
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flows.bridge.stages import WORKSPACE_MARK, StageError, dvc, dvc_env, has_remote


def _redact(url: str) -> str:
    """``url`` without a password or token (never log credentials embedded in a git URL)."""
    parts = urlsplit(url)
    if parts.password or (parts.username and parts.scheme in ("http", "https")):
        return urlunsplit(parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))
    return url


def _git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        # git's own message names the problem; the command line may hold a URL with a token
        raise StageError(f"git {args[0]} failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
    return out.stdout.strip()


def _local_dvc_cache(source: Path) -> str | None:
    """The cache directory the source checkout uses (shared, so runs restore each other's stages)."""
    if not (source / ".dvc").is_dir():
        return None
    out = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=source, env=dvc_env(),
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip()


def prepare_workspace(
    repository: str | None = None,
    commit: str | None = None,
    directory: str = "workspace",
    dvc_cache: str | None = None,
    data: bool = True,
    shared: list[str] | None = None,
) -> dict[str, str]:
    """Clone ``repository`` at ``commit`` into a fresh ``directory`` and make its data present.

    Args:
        repository: git URL or local path of the repository; None when ``directory`` is
            already a checkout (e.g. made by ``prefect.deployments.steps.git_clone``).
            Credentials come from git's own helpers (SSH agent, credential helper), never
            from this file.
        commit: the commit to check out (the deployed revision); None keeps the default branch.
        directory: where to clone, relative to the current directory (the run's own).
        dvc_cache: DVC cache directory to share with other runs (e.g. on NFS); empty or None:
            a local source checkout's own cache, else the clone's (data then comes from the
            DVC remote). Sharing it shares DVC's run-cache, so a stage computed by one run is
            restored, not recomputed, by the next.
        data: check out the data tracked by ``data.dvc`` (False for flows that only orchestrate).
        shared: paths (e.g. ``registry``) that a local source checkout lends to every run: they
            become links to the source's folders, so what a run publishes outlives its workspace.

    Returns:
        ``{"directory": <absolute path of the workspace>}``; Prefect runs the flow there.

    Raises:
        FileExistsError: ``directory`` exists and is not empty (it would not be fresh).
        StageError: clone, checkout or data restore failed; the message says which and why.
    """
    dest = Path(directory).resolve()
    local_source = Path(repository).expanduser().resolve() if repository and Path(repository).expanduser().is_dir() else None
    if repository:
        if dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"workspace {dest} is not empty; each run needs a fresh directory")
        print(f"cloning {_redact(repository)} at {commit or 'its default branch'} into {dest}", flush=True)
        _git("clone", "--quiet", "--no-checkout", str(local_source or repository), str(dest))
    elif not (dest / ".git").exists():
        raise StageError(f"prepare_workspace: no repository given and {dest} is not a git checkout")
    _git("checkout", "--quiet", "--force", "--detach", commit or "HEAD", cwd=dest)
    # runs asked to record a DVC experiment push it back to origin (flows.bridge.stages.save_experiment)
    _git("config", WORKSPACE_MARK, "true", cwd=dest)

    cache = dvc_cache or (_local_dvc_cache(local_source) if local_source else None)
    if cache and (dest / ".dvc").is_dir():
        # --local: written to .dvc/config.local, never committed
        dvc(dest, "cache", "dir", "--local", os.path.abspath(cache), log=lambda _: None)
    # data/ as a whole (data.dvc), or a sliced source's imports (tagsmith data track): one .dvc each
    data_files = ["data.dvc"] if (dest / "data.dvc").exists() else [
        p.relative_to(dest).as_posix() for p in [dest / "data/classes.txt.dvc", *sorted((dest / "data/slices").glob("*.dvc"))]
        if p.exists()]
    if data and data_files:
        try:
            dvc(dest, "checkout", *data_files)
        except StageError as e:
            if not has_remote(dest) and data_files == ["data.dvc"]:  # imports can be pulled from their source
                raise StageError(
                    f"data.dvc: the data is neither in the DVC cache {cache or '(the clone’s own)'} nor "
                    "on a DVC remote (none configured). Run `dvc commit data.dvc` in the source "
                    f"checkout, or configure a remote and `dvc push`.\n{e}"
                ) from e
            dvc(dest, "pull", *data_files)
    for name in shared or []:
        if local_source is None:
            continue  # a remote source has nothing to lend; use an s3:// store instead
        target = local_source / name
        target.mkdir(parents=True, exist_ok=True)
        link = dest / name
        if link.exists() or link.is_symlink():
            raise FileExistsError(f"{link} exists in the clone; cannot share {target} there")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
    return {"directory": str(dest)}


# The configuration class each container worker builds its jobs with (the `infra` extra installs
# them). Not the process worker: its job is this machine's environment, secrets included.
WORKER_CONFIGURATIONS = {
    "kubernetes": "prefect_kubernetes.worker:KubernetesWorkerJobConfiguration",
    "docker": "prefect_docker.worker:DockerWorkerJobConfiguration",
}
POOL_TYPES = {"k8s": "kubernetes", "docker": "docker"}  # infra/pools/<prefix>-*.json


def worker_job(template: dict[str, Any], values: dict[str, Any], kind: str, flow_run_name: str = "preview") -> dict[str, Any]:
    """The job a ``kind`` worker submits for a run with job variables ``values``, built by the
    worker's own code: its configuration class merges ``values`` over the template's defaults
    and applies Prefect's templating (a placeholder that is a whole value keeps its type:
    ``"{{ gpu_count }}"`` becomes the int 2; an unset one drops its key), then
    ``prepare_for_flow_run`` adds what a worker adds per run (env, labels, generated name,
    the engine command).

    Raises:
        ValueError: ``values`` names a variable the template does not declare (a worker would
            silently ignore it).
    """
    import asyncio
    import importlib
    import uuid

    from prefect.client.schemas.objects import FlowRun

    unknown = sorted(set(values) - set(template["variables"].get("properties", {})))
    if unknown:
        raise ValueError(f"job variables {unknown} are not declared by this template")
    module, _, name = WORKER_CONFIGURATIONS[kind].partition(":")
    config_class = getattr(importlib.import_module(module), name)
    # client: consulted only for block and variable references, which our templates have none of
    config = asyncio.run(config_class.from_template_and_values(copy.deepcopy(template), values, client=object()))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name=flow_run_name, flow_id=uuid.uuid4()))
    return config.model_dump(mode="json")


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "render":
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    path = Path(args[1])
    kind = POOL_TYPES.get(path.name.split("-")[0].removesuffix(".json"))
    if kind is None:
        print(f"{path}: name it <{'|'.join(POOL_TYPES)}>-*.json to say which worker renders it", file=sys.stderr)
        return 2
    values = {k: _parse_value(v) for k, _, v in (a.partition("=") for a in args[2:])}
    print(json.dumps(worker_job(json.loads(path.read_text()), values, kind), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
