"""Real parts for end-to-end tests: a throwaway git+dvc repo and a real Prefect server.

Everything started here is stopped by pid when the test session ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

# Small enough that the whole pipeline runs in well under a minute on 2 cores.
TINY_PARAMS = {
    "augment.image_size": 32,
    "augment.workers": 1,
    "augment.preview_images": 2,
    "augment.preview_draws": 2,
    "train_frozen.epochs": 1,
    "train_frozen.batch_size": 16,
    "train_full.epochs": 2,
    "train_full.batch_size": 16,
}


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children, by pid."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


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


def make_tiny_repo(dest: Path) -> Path:
    """A fresh git+dvc repository holding the project's pipeline and the tiny dataset."""
    from flows.overrides import apply_overrides
    from tasks import synth

    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT / name, dest / name)
    for pkg in ("tasks", "flows"):
        shutil.copytree(PROJECT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    apply_overrides(dest / "params.yaml", TINY_PARAMS)
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
def prefect_server(tmp_path_factory):
    """A real Prefect server on 127.0.0.1, its own database; yields the API URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(
        os.environ,
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=url,
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('prefect-db') / 'prefect.db'}",
    )
    log = (tmp_path_factory.mktemp("prefect-log") / "server.log").open("w")
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
