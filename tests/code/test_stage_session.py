"""One DVC repository per flow run (stages.session) and the in-process always_changed stage.

A fully cached flow re-run checks every stage; these make that cheap without changing what
it sees: inside a session a dvc subprocess makes the next check read the workspace afresh,
and an always_changed stage run in-process leaves the same dvc.lock as ``dvc repro``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.bridge import stages

PRINT_AND_WRITE = "python -c \"import pathlib; print('resolved v-42'); pathlib.Path('resolved.txt').write_text('v-42')\""


def _repo(root: Path, always_cmd: str = PRINT_AND_WRITE) -> Path:
    env = stages.dvc_env()
    root.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    (root / "input.txt").write_text("hello\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "resolve": {"cmd": always_cmd, "always_changed": True, "outs": ["resolved.txt"]},
        "make": {"cmd": "python -c \"open('out.txt','w').write(open('input.txt').read()*2)\"",
                 "deps": ["input.txt", "resolved.txt"], "outs": ["out.txt"]},
    }}, sort_keys=False))
    return root


def _lock(root: Path, name: str) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"][name]


def test_always_changed_stage_runs_in_process_as_dvc_repro_would(tmp_path):
    ours, theirs = _repo(tmp_path / "ours"), _repo(tmp_path / "theirs")
    lines: list[str] = []
    run = stages.repro(ours, "resolve", log=lines.append)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "resolve"], cwd=theirs,
                   env=stages.dvc_env(), check=True, capture_output=True)
    assert (run.outcome, run.fingerprint) == ("ran", stages.ALWAYS)
    assert "resolved v-42" in lines  # the command's own output reaches the flow's log
    assert _lock(ours, "resolve") == _lock(theirs, "resolve") == run.lock


def test_a_failing_always_changed_stage_raises_with_its_output(tmp_path):
    root = _repo(tmp_path, "python -c \"import sys; print('registry unreachable'); sys.exit(3)\"")
    with pytest.raises(stages.StageError, match="registry unreachable"):
        stages.repro(root, "resolve", log=lambda _: None)


def test_a_session_sees_what_a_dvc_subprocess_changed(tmp_path):
    root = _repo(tmp_path)
    with stages.session(root):
        stages.repro(root, "resolve", log=lambda _: None)
        before, current = stages.inspect(root, "make")
        assert not current
        stages.repro(root, "make", log=lambda _: None)
        assert stages.inspect(root, "make") == (before, True)
        (root / "input.txt").write_text("changed\n")  # an edit outside DVC: not seen until...
        stages.dvc(root, "status", log=lambda _: None)  # ...any dvc subprocess, the flow's only writer
        after, current = stages.inspect(root, "make")
        assert (after != before, current) == (True, False)
    assert not stages._SESSIONS  # nothing stays open after the block


def test_outside_a_session_every_check_reads_the_workspace(tmp_path):
    root = _repo(tmp_path)
    stages.repro(root, "resolve", log=lambda _: None)
    stages.repro(root, "make", log=lambda _: None)
    assert stages.is_current(root, "make")
    (root / "input.txt").write_text("changed\n")
    assert not stages.is_current(root, "make")


def test_a_session_collects_the_stages_once_and_a_second_check_still_agrees(tmp_path, monkeypatch):
    root = _repo(tmp_path)
    stages.repro(root, "resolve", log=lambda _: None)
    stages.repro(root, "make", log=lambda _: None)
    (root / "input.txt").write_text("changed\n")
    outside = stages.inspect(root, "make")
    assert outside[1] is False
    calls = []
    with stages.session(root):
        with stages._repo(root) as repo:
            collect = repo.stage.collect
            monkeypatch.setattr(repo.stage, "collect", lambda *a, **k: calls.append(a) or collect(*a, **k))
        assert stages.inspect(root, "resolve")[0] == stages.ALWAYS
        assert stages.inspect(root, "make") == outside
        # checking a stage records today's hashes in it: a second check must not reuse it
        assert stages.inspect(root, "make") == outside
    assert [Path(a[0]).name for a in calls] == ["dvc.yaml", "dvc.yaml:make"]


@pytest.mark.parametrize("edit", ["nothing", "dep", "param", "cmd", "out", "new_dep"])
def test_inspect_calls_a_stage_current_exactly_when_dvc_does(tmp_path, edit):
    root = _repo(tmp_path)
    (root / "params.yaml").write_text("p:\n  x: 1\n  y: [1, 2]\n")
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["make"]["params"] = ["p"]
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    stages.repro(root, "resolve", log=lambda _: None)
    stages.repro(root, "make", log=lambda _: None)
    if edit == "dep":
        (root / "input.txt").write_text("changed\n")
    elif edit == "param":
        (root / "params.yaml").write_text("p:\n  x: 2\n  y: [1, 2]\n")
    elif edit in ("cmd", "new_dep"):
        make = spec["stages"]["make"]
        make.update(cmd=make["cmd"] + " ") if edit == "cmd" else make["deps"].append("params.yaml")
        (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    elif edit == "out":
        (root / "out.txt").write_text("tampered\n")
    with stages.session(root):
        current = stages.inspect(root, "make")[1]
    assert current == stages.is_current(root, "make") == (edit == "nothing")  # is_current: DVC's Stage.changed()
