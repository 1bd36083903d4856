"""flows/deployment/results.py: where Prefect keeps stage results, checked before a run relies on it."""

from __future__ import annotations

import pytest

from flows.deployment import results


def test_s3_uris_split_into_bucket_and_prefix():
    assert results.parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert results.parse_s3_uri("s3://bucket") == ("bucket", "")


@pytest.mark.parametrize("uri", ["bucket/prefix", "http://host/bucket", "s3:///prefix"])
def test_anything_else_is_refused_with_the_value(uri):
    with pytest.raises(results.ResultStorageError, match="s3://BUCKET"):
        results.parse_s3_uri(uri)


def test_without_a_block_results_stay_on_this_machine_and_the_log_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv(results.SETTING, raising=False)
    lines: list[str] = []
    where = results.check(lines.append)
    assert where.startswith("local folder") and "this machine only" in where
    assert results.SETTING in lines[0]
