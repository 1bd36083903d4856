"""One error policy: expected failures end as `<stage>: error: <message>` and exit 1; bugs
keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.bridge.stages import StageError
from flows.deployment.results import ResultStorageError
from tasks.common.config import ConfigError
from tasks.common.errors import DataError, TagsmithError, stage_main
from tasks.dataset.imageio import ImageFault
from tasks.dataset.sources import SourceError
from tasks.ingest import IngestError
from tasks.registry.stores import RegistryError

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", [ConfigError, DataError, ImageFault, SourceError, IngestError,
                                 RegistryError, StageError, ResultStorageError])
def test_every_project_error_shares_the_base(cls):
    assert issubclass(cls, TagsmithError)


def test_weights_error_shares_the_base():
    from tasks.weights.resolve import WeightsError  # imports Keras

    assert issubclass(WeightsError, TagsmithError)


def test_expected_error_prints_one_line_and_exits_1(capsys):
    def body():
        raise DataError("the test split is empty")

    with pytest.raises(SystemExit) as e:
        stage_main("evaluate", body)
    assert e.value.code == 1
    assert capsys.readouterr().err == "evaluate: error: the test split is empty\n"


def test_a_bug_keeps_its_traceback():
    def body():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        stage_main("evaluate", body)


def test_body_result_is_returned():
    assert stage_main("ingest", lambda: 42) == 42


@pytest.mark.parametrize("module, section", [("tasks.ingest", "ingest"), ("tasks.evaluate", "evaluate")])
def test_stage_with_a_broken_params_file_says_so(tmp_path, module, section):
    (tmp_path / "params.yaml").write_text(f"{section}:\n  workers_typo: 3\n")
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    stage = module.split(".")[1]
    assert r.returncode == 1, r.stderr
    assert f"{stage}: error: params.yaml: {section}.workers_typo: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
