"""The benchmark harness's pure parts: rotation, ratios, load exclusion, the ceiling rule, the
result schema, provenance and the generated summaries. Fast (no benchmark runs), so in `make test`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import common, harness, provenance, run, summary

PROJECT = Path(__file__).resolve().parents[2]


def _fake_probe(foreign_loads):
    """A Probe stand-in whose repetitions report the given foreign loads in turn."""
    loads = iter(foreign_loads)

    class FakeProbe:
        def finish(self):
            return {"loadavg_start": [0.1, 0.1, 0.1], "loadavg_end": [0.2, 0.1, 0.1],
                    "foreign_load": next(loads), "wall_s": 1.0}

    return FakeProbe


def test_rotation_moves_every_variant_to_the_front_in_turn():
    assert [harness.rotation("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_interleave_runs_every_variant_once_per_repetition_in_rotating_order(monkeypatch):
    monkeypatch.setattr(harness, "Probe", _fake_probe([0.0, 0.0, 0.0]))
    calls: list[str] = []
    m = harness.interleave({n: (lambda n=n: calls.append(n) or 1.0) for n in "abc"}, reps=3,
                           max_foreign_load=0.5, log=lambda _: None)
    assert calls == list("abcbcacab")
    assert m.values == {n: [1.0] * 3 for n in "abc"}
    assert [r["order"] for r in m.reps] == [list("abc"), list("bca"), list("cab")]
    assert all({"loadavg_start", "loadavg_end", "foreign_load", "excluded"} <= set(r) for r in m.reps)


def test_a_repetition_under_foreign_load_is_kept_in_the_file_but_not_judged(monkeypatch):
    monkeypatch.setattr(harness, "Probe", _fake_probe([0.1, 1.4, 0.2]))
    values = iter([10.0, 5.0, 1.0, 9.0, 12.0, 6.0])
    m = harness.interleave({"ours": lambda: next(values), "ref": lambda: next(values)}, reps=3,
                           max_foreign_load=0.5, log=lambda _: None)
    assert [r["excluded"] for r in m.reps] == [False, True, False]
    assert "1.4 > 0.5" in m.reps[1]["why"] and m.excluded == 1
    assert m.values == {"ours": [10.0, 9.0, 12.0], "ref": [5.0, 1.0, 6.0]}  # rep 2 ran ref first
    assert m.kept("ours") == [10.0, 12.0] and m.kept("ref") == [5.0, 6.0]
    s = harness.summarize(m.values["ours"], "images/s", 1, m.kept_index)
    assert s["reps"] == [10.0, 9.0, 12.0] and s["kept"] == 2 and s["median"] == 11.0 and s["min"] == 10.0


def test_the_default_load_limit_is_a_quarter_of_the_cores_unless_set(monkeypatch):
    monkeypatch.delenv("TAGSMITH_BENCH_MAX_FOREIGN_LOAD", raising=False)
    monkeypatch.setattr(harness.os, "cpu_count", lambda: 8)
    assert harness.default_max_foreign_load() == 2.0
    monkeypatch.setenv("TAGSMITH_BENCH_MAX_FOREIGN_LOAD", "0.3")
    assert harness.default_max_foreign_load() == 0.3


def test_the_probe_measures_a_repetition_with_its_load():
    rec = harness.Probe().finish()
    assert len(rec["loadavg_start"]) == 3 and len(rec["loadavg_end"]) == 3
    assert rec["foreign_load"] is None or rec["foreign_load"] >= 0


def test_paired_ratio_is_the_median_of_per_repetition_ratios_not_the_ratio_of_medians():
    ours, ref = [10.0, 20.0, 40.0], [5.0, 20.0, 10.0]  # ratios 2, 1, 4
    ratios: dict = {}
    assert harness.compare(ratios, "x", ours, ref) == 2.0
    assert ratios == {"x": 2.0, "x_paired": 2.0}
    assert harness.paired([3.0, 1.0], [1.0, 1.0]) == 2.0
    assert harness.ratio(1.0, 0.0) is None and harness.paired([], []) is None


@pytest.mark.parametrize("ours, ceiling, valid", [
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], True),
    ([1.05, 1.05], [1.0, 1.0], True),
    ([1.2, 1.2, 1.2], [1.0, 1.0, 1.0], False),
    # paired median 0.95 hides two repetitions far above the ceiling; the medians do not
    ([2400.0, 2510.0, 1370.0, 2182.0, 1374.0], [1440.0, 2849.0, 2908.0, 1438.0, 1440.0], False),
])
def test_ceiling_check_uses_the_worse_of_both_ratios(ours, ceiling, valid):
    assert harness.ceiling_check("c", ours, ceiling)["valid"] is valid


def test_a_figure_above_its_own_ceiling_is_invalid_not_met():
    bad = harness.ceiling_check("ours vs ceiling", [1.2, 1.2, 1.2], [1.0, 1.0, 1.0])
    t = harness.judge("t", 1.2, ">= 0.95x", True, ceilings=[bad], basis="b")
    assert t["status"] == "invalid" and t["met"] is None and "1.2x its own ceiling" in t["why"]
    good = harness.ceiling_check("ours vs ceiling", [0.9], [1.0])
    assert harness.judge("t", 0.9, ">= 0.95x", False, "slow", [good])["status"] == "missed"
    assert harness.judge("t", 0.99, ">= 0.95x", True, ceilings=[good])["status"] == "met"
    none = harness.judge("t", None, ">= 0.95x", False)
    assert none["status"] == "not judged" and none["met"] is None


def test_result_files_have_the_agreed_shape_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "Probe", _fake_probe([0.0, 0.9, 0.0]))
    m = harness.interleave({"a": lambda: 1.0, "b": lambda: 2.0}, 3, max_foreign_load=0.5, log=lambda _: None)
    t = harness.judge("a vs b", 0.5, ">= 1x", False, "why")
    path = common.write_result("x", "python -m benchmarks.run x", {"reps": 3}, {}, {}, [t], [],
                               common.machine(), 0.0, tmp_path, m)
    r = json.loads(path.read_text())
    assert set(common.SCHEMA_KEYS) <= set(r)
    assert set(r["provenance"]) == {"commit", "dirty", "dirty_paths"}
    assert r["method"]["excluded_reps"] == 1 and r["method"]["reps"] == 3
    assert {"cpu", "cpu_count", "loadavg_at_start", "loadavg_at_end"} <= set(r["machine"])
    assert len(r["repetitions"]) == 3 and r["targets"][0]["status"] == "missed"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_provenance_says_which_commit_and_what_is_uncommitted(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = provenance.provenance(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (repo / "benchmarks" / "results" / "x.json").write_text("{}")  # results and dvc.lock are not code
    (repo / "dvc.lock").write_text("")
    assert provenance.provenance(repo)["dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    dirty = provenance.provenance(repo)
    assert dirty["dirty"] is True and dirty["dirty_paths"] == ["code.py"]
    assert "UNCOMMITTED" in provenance.describe(dirty)
    assert provenance.provenance(tmp_path / "nowhere")["commit"] is None
    assert provenance.describe(None) == "recorded before provenance: not from a known commit"


def test_run_refuses_committed_results_from_a_dirty_tree_or_too_few_repetitions(tmp_path):
    dirty = {"commit": "a" * 40, "dirty": True, "dirty_paths": ["tasks/x.py"]}
    clean = {"commit": "a" * 40, "dirty": False, "dirty_paths": []}
    assert "tasks/x.py" in run.refusal(common.RESULTS, dirty, False, None, ["input"])
    assert run.refusal(common.RESULTS, dirty, True, None, ["input"]) is None
    assert run.refusal(tmp_path, dirty, False, 1, ["input"]) is None  # scratch folder: recorded, not refused
    assert "at least 3" in run.refusal(common.RESULTS, clean, False, 2, ["input"])
    assert run.refusal(common.RESULTS, clean, False, 1, ["accuracy"]) is None  # deterministic


def test_unknown_benchmark_name_is_an_error(capsys):
    with pytest.raises(SystemExit) as e:
        run.main(["speed"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_make_bench_refuses_a_dirty_tree_before_measuring(monkeypatch, capsys):
    monkeypatch.setattr(common, "run_provenance", lambda: {"commit": "a" * 40, "dirty": True, "dirty_paths": ["f"]})
    monkeypatch.delenv("TAGSMITH_ALLOW_DIRTY", raising=False)
    assert run.main(["input"]) == 2
    assert "uncommitted changes" in capsys.readouterr().err


def _new_style(tmp_path: Path, status: str = "met") -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    report = {"name": "input_pipeline", "command": "python -m benchmarks.run input",
              "provenance": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": False, "dirty_paths": []},
              "machine": {"cpu": "cpu", "cpu_count": 2, "loadavg_at_start": [0, 0, 0], "loadavg_at_end": [1, 1, 1]},
              "method": {"interleaved": True, "reps": 3, "excluded_reps": 1, "max_foreign_load": 0.5,
                         "judged_on": "the paired ratio"},
              "repetitions": [{"rep": i, "order": ["a"], "loadavg_start": [0, 0, 0], "loadavg_end": [0, 0, 0],
                               "foreign_load": 0.9 if i == 2 else 0.0, "excluded": i == 2,
                               "why": "foreign load 0.9 > 0.5 cores" if i == 2 else ""} for i in (1, 2, 3)],
              "results": {"a": {"unit": "s", "reps": [1.0, 2.0, 3.0], "median": 2.0, "min": 1.0, "max": 3.0}},
              "ratios": {"a_vs_b_paired": 1.5},
              "targets": [{"name": "a vs b", "value": 1.5, "goal": ">= 1x", "status": status, "met": status == "met",
                           "why": "", "basis": "paired"}], "notes": [], "wall_s": 3.0}
    (folder / "input_pipeline.json").write_text(json.dumps(report))
    return folder


def test_summary_says_where_each_figure_came_from_and_how_many_repetitions_were_excluded(tmp_path):
    text = summary.render_summary(summary.load_results(_new_style(tmp_path)))
    assert "Commit 0123456789 (clean tree)" in text
    assert "**1 excluded**" in text and "**excluded**: foreign load 0.9 > 0.5 cores" in text
    assert "| a vs b | 1.5 | >= 1x | met | paired |" in text


def test_summary_marks_files_recorded_before_provenance_and_applies_the_ceiling_rule(tmp_path):
    legacy = {"name": "training", "command": "python -m benchmarks.run training", "machine": {},
              "results": {}, "ratios": {"small_cnn/real_vs_in_memory": 1.01, "small_cnn/real_vs_in_memory_paired": 1.2},
              "targets": [{"name": "training small_cnn: real input vs in-memory", "value": 1.2, "goal": ">= 0.95x",
                           "met": True, "why": ""}]}
    (tmp_path / "training.json").write_text(json.dumps(legacy))
    reports = summary.load_results(tmp_path)
    text = summary.render_summary(reports)
    assert "Recorded before provenance: not from a known commit" in text
    assert "recorded before the load rule" in text
    row = summary.render_readme_table(reports).splitlines()[-1]
    assert "**INVALID**" in row and "recorded before provenance" in row


def test_readme_table_is_spliced_between_its_markers_only():
    readme = f"intro\n{summary.README_START}\nold table\n{summary.README_END}\noutro\n"
    out = summary.splice(readme, "| new |")
    assert out == f"intro\n{summary.README_START}\n| new |\n{summary.README_END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        summary.splice("no markers", "| new |")


def test_committed_summary_and_readme_table_are_generated_from_the_committed_results():
    """Fails when a figure in SUMMARY.md or the README's table was edited by hand (or is stale)."""
    expected = summary.generate(summary.RESULTS, summary.README)
    for path, text in expected.items():
        assert path.read_text() == text, f"{path} differs from the result files: run python -m benchmarks.summary"


def _accuracy_run(weights: str, frozen: float, full: float, train_s: tuple[float, float], foreign: float = 0.0):
    return {"setup": {"weights": weights}, "frozen": {"map": frozen}, "full": {"map": full},
            "train_s": {"frozen": train_s[0], "full": train_s[1]}, "load": {"foreign_load": foreign}}


def test_accuracy_targets_compare_imagenet_with_the_best_from_scratch():
    from benchmarks.accuracy import judge, setup_for

    per = {"small_cnn:none": _accuracy_run("none", 0.10, 0.50, (10, 280)),
           "efficientnet_lite0:imagenet": _accuracy_run("imagenet", 0.45, 0.55, (100, 300))}
    targets, ratios = judge(per, max_foreign_load=0.5)
    assert [(t["status"], t["value"]) for t in targets] == [("met", 4.5), ("met", 1.1), ("missed", 1.071)]
    assert "small_cnn:none frozen then full" in targets[1]["basis"]
    # a busy machine: the time target is not judged, the accuracy targets still are
    per["small_cnn:none"]["load"]["foreign_load"] = 1.2
    targets, _ = judge(per, max_foreign_load=0.5)
    assert [t["status"] for t in targets] == ["met", "met", "not judged"] and "foreign load 1.2" in targets[2]["why"]
    # nothing from scratch to compare with: not judged, never met
    targets, _ = judge({"efficientnet_lite0:imagenet": per["efficientnet_lite0:imagenet"]}, 0.5)
    assert {t["status"] for t in targets} == {"not judged"}
    assert setup_for("efficientnet_lite0").weights == "imagenet" and setup_for("mobilenet_v3_small").weights == "none"
    assert setup_for("efficientnet_lite0:none").overrides == setup_for("efficientnet_lite0").overrides
