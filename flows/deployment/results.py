"""Prefect result storage on S3: what lets a stage be "Cached" on any worker, not only the one
that ran it.

A stage task's cache entry is its persisted result, stored under the key
``tagsmith-<stage>-<fingerprint>`` in the flow run's result storage. By default that is a local
folder (``PREFECT_LOCAL_STORAGE_PATH``), so each machine has its own cache. With an S3 bucket
block as the default result storage, every worker reads and writes the same entries.

    tagsmith results-store s3://BUCKET/tagsmith/prefect-results [--endpoint-url URL]
        # saves the S3Bucket block `tagsmith-results` on the server in PREFECT_API_URL and prints
        #   PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=s3-bucket/tagsmith-results
        # which goes into each worker's environment (or the pool's `env` job variable)

The block holds no keys: boto3 finds credentials through the standard AWS chain (role,
profile, environment) wherever the flow runs.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

from tasks.common.errors import TagsmithError

BLOCK_TYPE = "s3-bucket"
DEFAULT_NAME = "tagsmith-results"
SETTING = "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"


class ResultStorageError(TagsmithError, RuntimeError):
    """The configured result storage cannot be used; the message says which and why."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; a clear error otherwise."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ResultStorageError(f"result storage must be an s3://BUCKET[/PREFIX] URI, got {uri!r}")
    return parts.netloc, parts.path.strip("/")


def save_block(uri: str, endpoint_url: str | None = None, name: str = DEFAULT_NAME) -> str:
    """Save (or replace) the S3Bucket block ``name`` for ``uri``; returns ``s3-bucket/<name>``.

    ``endpoint_url`` is for S3-compatible stores (MinIO, moto); None means AWS, or whatever
    ``AWS_ENDPOINT_URL`` says where the flow runs. The bucket is probed first: nothing is
    saved if it cannot be written.
    """
    from prefect_aws import AwsCredentials, S3Bucket
    from prefect_aws.client_parameters import AwsClientParameters

    bucket, prefix = parse_s3_uri(uri)
    credentials = AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url))
    block = S3Bucket(bucket_name=bucket, bucket_folder=prefix, credentials=credentials)
    _probe(block, uri)
    block.save(name, overwrite=True)
    return f"{BLOCK_TYPE}/{name}"


def check(log: Callable[[str], None] = print) -> str:
    """Make sure the result storage this run will use can be written; return where it is.

    Prefect only warns when it cannot persist a result and carries on, so a mistyped bucket
    or a missing permission would quietly turn every later run into a full recompute. This
    writes and reads back one small object and raises ``ResultStorageError`` instead. (A
    block name that does not exist already stops the flow run before it starts.)
    """
    slug = os.environ.get(SETTING, "")
    if not slug:
        from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

        where = f"local folder {PREFECT_LOCAL_STORAGE_PATH.value()} (this machine only)"
        log(f"result storage: {where}; set {SETTING} to share stage caches between workers")
        return where
    from prefect.blocks.core import Block

    block = Block.load(slug)
    _probe(block, slug)
    where = f"block {slug} (s3://{getattr(block, 'bucket_name', '?')}/{getattr(block, 'bucket_folder', '')})"
    log(f"result storage: {where}")
    return where


def _probe(block: Any, name: str) -> None:
    """Write, read back and delete one small object; ``ResultStorageError`` saying why if not."""
    probe = f".tagsmith-probe-{uuid.uuid4().hex}"
    try:
        block.write_path(probe, b"ok")
        if block.read_path(probe) != b"ok":
            raise ResultStorageError(f"result storage {name}: read back something else than was written")
    except ResultStorageError:
        raise
    except Exception as e:  # botocore's message names the bucket and the refusal
        raise ResultStorageError(f"result storage {name} is not writable: {type(e).__name__}: {e}") from e
    # S3Bucket has no delete_path; a failed clean-up only leaves two bytes behind.
    try:
        block.credentials.get_s3_client().delete_object(Bucket=block.bucket_name, Key=block._resolve_path(probe))
    except Exception:
        pass
