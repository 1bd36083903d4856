"""Real parts for end-to-end tests: a throwaway git+dvc repo and a real Prefect server.

Everything started here is stopped by pid when the test session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flows.bridge.recipes import as_params

PROJECT = Path(__file__).resolve().parents[2]

# Small enough that the whole pipeline runs in well under a minute on 2 cores: the small CNN
# from scratch (the demo's EfficientNet-Lite0 would cost minutes per pipeline), cut down.
TINY_PARAMS = {
    **as_params("small_cnn-scratch"),
    "augment.image_size": 32,
    "augment.workers": 1,
    "augment.preview_images": 2,
    "augment.preview_draws": 2,
    "train_frozen.epochs": 1,
    "train_frozen.batch_size": 16,
    "train_full.epochs": 2,
    "train_full.batch_size": 16,
}


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process started with start_new_session=True, and its children, by pid.

    A group a test already killed (a worker "losing its machine") is only reaped. Descendants
    that left the group (a Prefect process worker starts each flow run in a session of its own)
    are killed too, so no run outlives the test that started it.
    """
    import psutil

    try:
        strays = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        strays = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for child in strays:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(strays, timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.update(kw.pop("env", {}))
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def api(url: str, path: str, body: dict | None = None, attempts: int = 6):
    """One call of the Prefect REST API, as the UI makes it.

    Retries 503 as Prefect's own client does: the server answers it when SQLite is busy (e.g.
    while the scheduler fills in a deployment's future runs) and nothing was written.
    """
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2 ** attempt)


def trigger(url: str, deployment: str, parameters: dict, timeout: float = 900) -> dict:
    """Create a run as the UI's Run button does, wait for a final state, return the run."""
    (dep,) = api(url, "/deployments/filter", {"deployments": {"name": {"any_": [deployment]}}})
    flow_run = api(url, f"/deployments/{dep['id']}/create_flow_run", {"parameters": parameters})
    deadline = time.time() + timeout
    while time.time() < deadline:
        flow_run = api(url, f"/flow_runs/{flow_run['id']}")
        if flow_run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return flow_run
        time.sleep(3)
    raise AssertionError(f"{deployment} run still {flow_run['state']['name']} after {timeout} s")


@contextlib.contextmanager
def prefect_worker(api_url: str, pool: str, workdir: Path, env: dict[str, str] | None = None, limit: int = 2):
    """A process worker of ``pool`` started in ``workdir`` (its log: workdir/worker.log); stopped by pid."""
    # polls for scheduled runs every 2 s, not Prefect's 10: each run the tests trigger starts sooner
    worker_env = dict(os.environ, PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="2",
                      PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    worker_env.update(env or {})
    log_path = workdir / "worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", str(limit)],
                                cwd=workdir, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield log_path
    finally:
        # `prefect worker start` (3.9) does not exit on SIGTERM/SIGINT; its runs are finished here
        stop_group(proc, grace=3)


def make_tiny_repo(dest: Path) -> Path:
    """A fresh git+dvc repository holding the project's pipeline and the tiny dataset."""
    from flows.bridge.overrides import apply_overrides
    from tasks.splits import ledger
    from tasks.demo import synth

    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT / name, dest / name)
    for pkg in ("tasks", "flows"):
        shutil.copytree(PROJECT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    apply_overrides(dest / "params.yaml", TINY_PARAMS)
    ledger.write(dest / "data.splits.tsv", {})  # the tiny data's first version: no split recorded yet
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "init", "-q"], dest)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], dest)
    synth.generate(dest / "data", preset="tiny")
    run([sys.executable, "-m", "dvc", "add", "-q", "data"], dest)
    run(git + ["add", "-A"], dest)
    run(git + ["commit", "-qm", "tiny"], dest)
    return dest


@pytest.fixture(scope="session")
def tiny_repo_factory(tmp_path_factory):
    """Call to get a new, independent tiny repo (same content every time)."""
    def make(name: str) -> Path:
        return make_tiny_repo(tmp_path_factory.mktemp(name) / "repo")
    return make


@pytest.fixture(scope="session")
def first_repro(tiny_repo_factory):
    """A tiny repo after its first `dvc repro`: (repo, the run's stdout, the dvc.lock it wrote).

    One whole pipeline run for the session: test_dvc_repro goes on from the repo, test_flow
    compares the lock with the one its flow's first run writes.
    """
    repo = tiny_repo_factory("dvc-repro")
    first = run([sys.executable, "-m", "dvc", "repro"], repo)
    return repo, first.stdout, (repo / "dvc.lock").read_text()


@contextlib.contextmanager
def start_prefect_server(workdir: Path):
    """A real Prefect server on 127.0.0.1 with its own database under ``workdir``; yields the API URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(
        os.environ,
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=url,
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{workdir / 'prefect.db'}",
    )
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """The test session's Prefect server; yields the API URL."""
    with start_prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url
