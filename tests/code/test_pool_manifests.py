"""The Kubernetes Jobs our pool templates make are ones Kubernetes would accept.

Each template is rendered by the worker's own code (prefect-kubernetes, pinned in the ``infra``
extra): job variables merged over the template's defaults, substituted with Prefect's
templating, then ``prepare_for_flow_run`` (env as a list, labels, generateName, the engine
command), exactly what ``KubernetesWorker`` submits. The manifest is then validated with
``kubernetes-validate`` against the bundled OpenAPI schema of a current Kubernetes, in strict
mode (unknown fields are errors: Kubernetes drops or rejects them). Offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest

from flows.deployment.deploy import worker_job

ROOT = Path(__file__).resolve().parents[2]
POOLS = ROOT / "infra/pools"
K8S_VERSION = "1.33"  # a Kubernetes release that managed clusters (EKS, GKE, AKS) run today
K8S_POOLS = sorted(p.name for p in POOLS.glob("k8s-*.json"))

# Every variable a deployment or a run may set, at a value other than its default
NON_DEFAULT = {
    "image": "registry.example/tagsmith-gpu:abc123",
    "image_pull_policy": "Always",
    "namespace": "ml-train",
    "service_account_name": "trainer",
    "credentials_secret": "s3-keys",
    "cpu_request": "500m",
    "memory_request": "2Gi",
    "memory_limit": "3Gi",
    "scratch_size": "5Gi",
    "shm_size": "512Mi",
    "finished_job_ttl": 600,
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
    "labels": {"team": "ml", "tagsmith/stage": "train_full"},
    "env": {"TAGSMITH_CHECKPOINTS": "s3://bucket/ckpt"},
    "name": "train-full",
    "command": "python -m prefect.engine",
    "job_watch_timeout_seconds": 7200,
    "pod_watch_timeout_seconds": 120,
    "stream_output": False,
}


def template(name: str) -> dict:
    return json.loads((POOLS / name).read_text())


def worker_manifest(name: str, values: dict) -> dict:
    """The Job manifest a Kubernetes worker of pool template ``name`` submits for a flow run."""
    tpl = template(name)
    declared = set(tpl["variables"]["properties"])
    job = worker_job(tpl, {k: v for k, v in values.items() if k in declared}, "kubernetes", flow_run_name="olive-owl")
    manifest = job["job_manifest"]
    # The API server fills name from generateName; kubernetes-validate's reports expect one.
    manifest["metadata"].setdefault("name", manifest["metadata"]["generateName"] + "x1")
    return manifest


def validate_strictly(manifest: dict) -> None:
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        raise AssertionError(f"not a valid {manifest['kind']} for Kubernetes {K8S_VERSION}: {where}: {e.message}") from None


def test_every_kubernetes_pool_is_covered():
    assert K8S_POOLS == ["k8s-cpu.json", "k8s-gpu.json"]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-defaults"])
@pytest.mark.parametrize("name", K8S_POOLS)
def test_rendered_job_validates_strictly_against_the_kubernetes_schema(name, values):
    manifest = worker_manifest(name, values)
    assert "{{" not in json.dumps(manifest)
    validate_strictly(manifest)


def test_non_default_variables_reach_the_manifest():
    job = worker_manifest("k8s-gpu.json", {**NON_DEFAULT, "gpu_count": 2})
    pod = job["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert job["metadata"]["namespace"] == "ml-train"
    assert job["metadata"]["generateName"] == "train-full-"
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert pod["serviceAccountName"] == "trainer" and pod["nodeSelector"] == NON_DEFAULT["node_selector"]
    assert pod["tolerations"] == NON_DEFAULT["tolerations"]
    assert box["image"] == NON_DEFAULT["image"] and box["imagePullPolicy"] == "Always"
    assert box["args"] == ["python", "-m", "prefect.engine"]
    assert box["resources"] == {"requests": {"cpu": "500m", "memory": "2Gi"},
                                "limits": {"nvidia.com/gpu": 2, "memory": "3Gi"}}
    assert box["envFrom"] == [{"secretRef": {"name": "s3-keys", "optional": True}}]
    env = {e["name"]: e.get("value") for e in box["env"]}
    assert env["TAGSMITH_CHECKPOINTS"] == "s3://bucket/ckpt"
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/tagsmith-results"  # defaults kept
    assert job["metadata"]["labels"]["team"] == "ml"


def test_job_fields_live_in_the_job_spec_not_the_pod_spec():
    job = worker_manifest("k8s-gpu.json", {})
    assert job["spec"]["parallelism"] == 1 and job["spec"]["completions"] == 1
    assert job["spec"]["backoffLimit"] == 0  # Prefect's flow-run retries own retrying, not the Job
    # the check itself would have caught the old template (Job fields inside the pod spec)
    job["spec"]["template"]["spec"]["parallelism"] = 1
    with pytest.raises(AssertionError, match="parallelism"):
        validate_strictly(job)


def test_cpu_pool_asks_for_no_gpu_and_no_gpu_node():
    pod = worker_manifest("k8s-cpu.json", {})["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert "nvidia.com/gpu" not in json.dumps(pod)
    assert pod.get("nodeSelector", {}) == {} and pod.get("tolerations", []) == []
    assert box["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert {e["name"]: e.get("value") for e in box["env"]}["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == "s3-bucket/tagsmith-results"


@pytest.mark.parametrize("values", [{}, {"gpu_count": 2, "image": "tagsmith-gpu:abc", "volumes": ["/srv/dvc:/dvc"],
                                        "mem_limit": "16g", "env": {"A": "1"}, "name": "train-full",
                                        "networks": ["ml"], "labels": {"team": "ml"}}],
                         ids=["defaults", "non-defaults"])
def test_docker_template_builds_the_docker_workers_configuration(values):
    job = worker_job(template("docker-gpu.json"), values, "docker")
    (req,) = job["container_create_kwargs"]["device_requests"]
    assert req["Count"] == values.get("gpu_count", -1)
    assert job["image"] == values.get("image", "tagsmith-gpu:latest")
    assert "{{" not in json.dumps(job)


def test_render_refuses_a_variable_the_template_does_not_declare():
    with pytest.raises(ValueError, match="gpus"):
        worker_job(template("k8s-gpu.json"), {"gpus": 2}, "kubernetes")
