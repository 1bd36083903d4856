"""Test-session isolation: every pytest session gets its own Prefect home and result storage.

Set before anything imports Prefect, so no cache or result leaks between sessions or from a
developer's ~/.prefect.
"""

import os
import tempfile
from pathlib import Path

import pytest

_session_home = tempfile.mkdtemp(prefix="tagsmith-prefect-")
os.environ["PREFECT_HOME"] = _session_home
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_session_home, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)  # tests start their own server when they need one
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """The session's S3 endpoint (moto's server over HTTP, tests/e2e/moto_s3.py): each module
    makes buckets of its own on it. Tests that pause or stop the endpoint start one of their own."""
    from tests.e2e.moto_s3 import MotoServer

    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()


# `make test` runs two pytest-xdist workers with --dist loadgroup: each group runs whole on one
# worker, so a module's fixtures (a trained pipeline, a server) are set up once. A group is a test
# file, but files that share a session fixture's product go together: test_flow compares its
# lock with first_repro's, which test_dvc_repro goes on from (one pipeline run, not one a worker).
SHARED_GROUPS = {"e2e/test_flow": "e2e/first_repro", "e2e/test_dvc_repro": "e2e/first_repro"}


# Under xdist the groups are handed out in collection order (--no-loadscope-reorder): the long
# end-to-end files first, the many short unit tests last, so neither worker ends alone on a long one.
FIRST = ("e2e", "model")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            module = item.path.relative_to(tests).with_suffix("").as_posix()
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUPS.get(module, module)))
    if hasattr(config, "workerinput"):  # an xdist worker; a plain run keeps pytest's order
        def rank(item):
            top = item.path.relative_to(tests).parts[0]
            return FIRST.index(top) if top in FIRST else len(FIRST)
        items.sort(key=rank)
