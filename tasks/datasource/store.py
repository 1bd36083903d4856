"""Where a sliced data source lives: a local folder or an S3 prefix, written only by creation.

A sliced source is append-only (see ``tasks/datasource/slices.py``), so its store offers no way to
overwrite: ``create`` refuses a key that already exists (a local ``O_EXCL`` open; on S3 a
conditional ``put_object(IfNoneMatch='*')``, which the service checks atomically, so two writers
racing for the same key cannot both win). ``replace`` exists for ``classes.txt`` only, whose
content is checked to extend the previous one before it is written.

S3 goes through boto3 (the endpoint is ``AWS_ENDPOINT_URL`` when set, for MinIO or moto).

Library only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from tasks.common.errors import TagsmithError


class StoreError(TagsmithError, RuntimeError):
    """The source cannot be read or written (names the URI)."""


class AlreadyExists(StoreError):
    """``create`` found the key already there: nothing was written."""


class SliceStore(Protocol):
    """Keys are POSIX paths relative to the source root (``slices/s1/labels.tsv``)."""

    def uri(self, key: str = "") -> str: ...
    def list(self, prefix: str = "") -> dict[str, int]: ...  # key -> size in bytes
    def get(self, key: str) -> bytes | None: ...
    def create(self, key: str, data: bytes) -> None: ...
    def replace(self, key: str, data: bytes) -> None: ...


class LocalStore:
    """A source in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def list(self, prefix: str = "") -> dict[str, int]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return {}
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in sorted(base.rglob("*")) if p.is_file()}

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def create(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise AlreadyExists(f"{self.uri(key)} already exists") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def replace(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers see the old or the new file, never half of one


class S3Store:
    """A source under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}".rstrip("/")

    def list(self, prefix: str = "") -> dict[str, int]:
        full = self._key(prefix)
        full = full if full.endswith("/") or not full else full + "/"
        out: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    out[obj["Key"][len(self.prefix) + 1 if self.prefix else 0:]] = int(obj["Size"])
        except Exception as e:  # noqa: BLE001 - boto3 raises many types; all mean "cannot list"
            raise StoreError(f"cannot list {self.uri(prefix)}: {e}") from None
        return out

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot read {self.uri(key)}: {e}") from None

    def create(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except Exception as e:  # noqa: BLE001
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExists(f"{self.uri(key)} already exists") from None
            raise StoreError(f"cannot write {self.uri(key)}: {e}") from None

    def replace(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as e:  # noqa: BLE001
            raise StoreError(f"cannot write {self.uri(key)}: {e}") from None


def open_source(uri: str) -> SliceStore:
    """A store for ``s3://bucket/prefix`` or a local folder path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{uri}: an S3 source needs a bucket (s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme not in ("", "file"):
        raise StoreError(f"{uri}: sources are a local folder or s3://bucket/prefix")
    return LocalStore(Path(parsed.path if parsed.scheme == "file" else uri))
