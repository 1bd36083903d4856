"""Test-session isolation: every pytest session gets its own Prefect home and result storage.

Set before anything imports Prefect, so no cache or result leaks between sessions or from a
developer's ~/.prefect.
"""

import os
import tempfile

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
