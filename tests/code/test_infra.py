"""infra/: work pool templates render to GPU jobs, the deployment file deploys what it should,
and the pull step gives each run a fresh clone of the deployed commit with its data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.deployment.deploy import POOL_TYPES, _redact, prepare_workspace, worker_job

ROOT = Path(__file__).resolve().parents[2]
POOLS = ROOT / "infra/pools"


def template(name: str) -> dict:
    return json.loads((POOLS / name).read_text())


def render(name: str, values: dict) -> dict:
    """What a worker of the pool ``infra/pools/<name>`` submits for a run (its own code)."""
    return worker_job(template(name), values, POOL_TYPES[name.split("-")[0]])


@pytest.mark.parametrize("name", ["k8s-gpu.json", "k8s-cpu.json", "docker-gpu.json", "process.json"])
def test_templates_pass_prefects_own_work_pool_validation(name):
    from prefect.server.schemas.actions import WorkPoolCreate

    tpl = template(name)
    assert set(tpl) == {"job_configuration", "variables"}
    WorkPoolCreate(name="t", type="kubernetes", base_job_template=tpl)  # raises on undeclared placeholders


def test_k8s_template_renders_gpu_limit_node_selector_and_tolerations():
    tol = [{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}]
    job = render("k8s-gpu.json", {"gpu_count": 2, "node_selector": {"accel": "l4"}, "tolerations": tol})
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2  # an int, not "2"
    assert pod["nodeSelector"] == {"accel": "l4"}
    assert pod["tolerations"] == tol
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_k8s_template_defaults_ask_for_one_gpu_on_a_gpu_node():
    pod = render("k8s-gpu.json", {})["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "{{" not in json.dumps(pod)


def test_docker_template_renders_gpu_device_requests():
    job = render("docker-gpu.json", {"gpu_count": 1, "image": "tagsmith-gpu:abc"})
    (req,) = job["container_create_kwargs"]["device_requests"]
    assert req["Driver"] == "nvidia" and req["Count"] == 1
    assert ["gpu", "compute", "utility"] in req["Capabilities"]
    assert job["image"] == "tagsmith-gpu:abc"
    assert "{{" not in json.dumps(job)


@pytest.mark.parametrize("name", ["k8s-gpu.json", "k8s-cpu.json", "docker-gpu.json"])
def test_container_pools_keep_stage_caches_in_the_shared_s3_results(name):
    # a pod's disk dies with it: without shared result storage no run would find a stage cached
    job = render(name, {})
    assert job["env"]["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/tagsmith-results"
    assert not [k for k in job["env"] if "SECRET" in k or "KEY" in k]


def test_deployment_file_has_nightly_manual_sweep_and_train_stage_each_in_a_fresh_clone():
    spec = yaml.safe_load((ROOT / "infra/prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"retrain-nightly", "retrain", "sweep", "train-stage-gpu"}
    assert deps["retrain-nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    assert not deps["retrain"].get("schedules")
    for d in deps.values():
        (step,) = d.get("pull") or spec["pull"]
        args = step["flows.deployment.deploy.prepare_workspace"]
        assert args["commit"] == "{{ revision.stdout }}" and args["repository"] == "{{ origin.stdout }}"
        module, _, func = d["entrypoint"].partition(":")
        assert f"def {func}(" in (ROOT / module).read_text() or f"async def {func}(" in (ROOT / module).read_text()


def test_retrain_parameters_reach_the_ui_form_with_descriptions():
    from prefect.utilities.callables import parameter_schema

    from flows.retrain import retrain

    props = parameter_schema(retrain).model_dump()["properties"]
    assert {"backbone", "epochs_full", "params", "workspace"} <= set(props)
    assert all(p.get("description") for p in props.values()), [k for k, p in props.items() if not p.get("description")]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_prepare_workspace_clones_the_deployed_commit_with_data_from_the_shared_cache(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    git("init", "-q", cwd=src)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=src, check=True)
    (src / "data/labels.tsv").write_text("filename\tlabels\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "data"], cwd=src, check=True)
    (src / "code.txt").write_text("deployed\n")
    git("add", "-A", cwd=src)
    git("commit", "-qm", "one", cwd=src)
    deployed = git("rev-parse", "HEAD", cwd=src)
    (src / "code.txt").write_text("later\n")
    git("commit", "-qam", "two", cwd=src)

    monkeypatch.chdir(tmp_path)
    out = prepare_workspace(repository=str(src), commit=deployed, directory="run1", shared=["registry"])
    ws = Path(out["directory"])
    assert ws == tmp_path / "run1"
    assert (ws / "code.txt").read_text() == "deployed\n"
    assert (ws / "data/labels.tsv").read_text() == "filename\tlabels\n"  # from the source's cache
    assert (ws / "registry").resolve() == (src / "registry").resolve()
    with pytest.raises(FileExistsError):
        prepare_workspace(repository=str(src), commit=deployed, directory="run1")


def test_git_urls_are_logged_without_their_token():
    assert "s3cr3t" not in _redact("https://user:s3cr3t@github.com/org/tagsmith.git")
    assert _redact("/srv/repos/tagsmith") == "/srv/repos/tagsmith"
