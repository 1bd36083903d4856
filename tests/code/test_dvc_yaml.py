"""dvc.yaml is the one DAG: every stage lists the code it runs, and the flow mirrors it."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from flows import stages
from flows.retrain import STAGES

PROJECT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def tasks_imported_by(module: str, seen: set[str] | None = None) -> set[str]:
    """Every tasks/*.py module reachable by imports from ``module`` (including itself)."""
    seen = seen if seen is not None else set()
    if module in seen:
        return seen
    seen.add(module)
    tree = ast.parse((PROJECT / "tasks" / f"{module}.py").read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module == "tasks":
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tasks."):
            names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("tasks.")]
        for name in names:
            if (PROJECT / "tasks" / f"{name}.py").exists():
                tasks_imported_by(name, seen)
    return seen


def test_every_stage_lists_the_code_it_imports():
    for name, spec in SPEC.items():
        module = spec["cmd"].split()[2].split(".")[1]  # python -m tasks.<module> [...]
        needed = {f"tasks/{m}.py" for m in tasks_imported_by(module)}
        missing = needed - set(spec["deps"])
        assert not missing, f"dvc.yaml stage '{name}' runs code it does not list as deps: {sorted(missing)}"


def test_no_stage_writes_under_data():
    for name, spec in SPEC.items():
        for out in spec.get("outs", []):
            path = out if isinstance(out, str) else next(iter(out))
            assert not path.startswith("data/") and path != "data", (name, path)


def test_flow_runs_the_dvc_yaml_stages_in_order():
    assert stages.pipeline(PROJECT) == STAGES


def test_pipeline_rejects_a_stage_that_depends_on_a_later_one(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "deps": ["out_b"], "outs": ["out_a"]},
        "b": {"cmd": "y", "deps": ["out_a"], "outs": ["out_b"]},
    }}))
    try:
        stages.pipeline(tmp_path)
    except stages.StageError as e:
        assert "'a' depends on 'out_b'" in str(e)
    else:
        raise AssertionError("a backward dependency was accepted")
