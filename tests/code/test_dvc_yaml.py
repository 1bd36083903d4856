"""dvc.yaml is the one DAG: every stage lists the code it runs, and the flow mirrors it."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from flows.bridge import stages
from flows.retrain import STAGES
from tasks.common import paths

PROJECT = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def module_file(dotted: str) -> Path | None:
    """The project file of a dotted ``tasks`` module or package, or None if it is not ours."""
    path = PROJECT.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def tasks_imported_by(dotted: str, seen: set[Path] | None = None) -> set[Path]:
    """Every tasks/ source file reachable by imports from ``dotted`` (including itself and
    the ``__init__.py`` of each package on the way)."""
    seen = seen if seen is not None else set()
    file = module_file(dotted)
    if file is None or file in seen:
        return seen
    seen.add(file)
    parts = dotted.split(".")
    for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
        tasks_imported_by(".".join(parts[:i]), seen)
    for node in ast.walk(ast.parse(file.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tasks":
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.split(".")[0] == "tasks"]
        for target in targets:
            tasks_imported_by(target, seen)
    return seen


def covered(file: Path, deps: list[str]) -> bool:
    rel = file.relative_to(PROJECT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def test_every_stage_lists_the_code_it_imports():
    for name, spec in SPEC.items():
        module = spec["cmd"].split()[2]  # python -m tasks.<module> [...]
        needed = {f for f in tasks_imported_by(module) if f.name != "__init__.py" or f.stat().st_size}
        missing = sorted(str(f.relative_to(PROJECT)) for f in needed if not covered(f, spec["deps"]))
        assert not missing, f"dvc.yaml stage '{name}' runs code it does not list as deps: {missing}"


def test_artifact_layout_matches_dvc_yaml():
    outs = {next(iter(o)) if isinstance(o, dict) else o for spec in SPEC.values() for o in spec.get("outs", [])}
    assert {str(p) for p in (paths.DATASET, paths.SHARDS, paths.model_dir("frozen"), paths.FULL_MODEL,
                             paths.EVAL, paths.PUBLISH)} <= outs


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
