"""Object stores behind the model registry: a local folder or an S3 bucket/prefix.

Both implement the same small interface (keys are '/'-separated, relative to the store root):
``put_file`` (verified: the stored bytes' sha256 must equal the local one), ``put_bytes``,
``get_bytes``, ``download``, ``list_keys``, ``sha256``, ``delete`` and ``uri``; and a
compare-and-swap pair for objects several writers may race on (the aliases): ``get_tagged``
returns the bytes with a token naming that exact state, and ``put_if`` writes only if the
object is still in the state the token names (None: only if it does not exist), else raises
``WriteConflict``. ``after_put`` is an optional hook called with each key once it is stored
(tests use it to cut the endpoint mid-publish).

Compare-and-swap on S3 is S3's own conditional write (``If-Match: <ETag>`` to replace,
``If-None-Match: *`` to create; 412 PreconditionFailed or 409 ConditionalRequestConflict when
another writer got there first), so it holds across machines with no lock service. A local
folder has no such primitive: the compare and the rename happen under an exclusive
``fcntl.flock`` on a lock file beside the object (processes on one machine; NFS only where its
lock daemon runs).

S3 goes through boto3: the transfer manager (multipart above a threshold), botocore's
retry modes with backoff on throttling/5xx/connection errors, and SHA-256 checksums sent with
every upload (S3 verifies each part on arrival); afterwards the object's full-object
checksum is compared, or, for multipart objects whose checksum is composite, the object is
re-read and hashed. The endpoint is ``S3Options.endpoint_url``, else ``AWS_ENDPOINT_URL``.
Not fsspec/s3fs: the registry needs S3's own checksums and conditional writes per request,
which boto3 exposes directly and s3fs does not.

Library only; no command line.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks.common.errors import TagsmithError
from tasks.common.files import sha256_bytes, sha256_file

CHUNK = 1 << 20


class RegistryError(TagsmithError, RuntimeError):
    """A store operation that failed; the message names the store URI, the key and the cause."""


class WriteConflict(RegistryError):
    """A conditional write found the object changed (or created) since the caller read it."""


@dataclass(frozen=True)
class S3Options:
    """How to talk to S3 (defaults suit AWS; tests shrink the timeouts and attempts)."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL or AWS itself
    max_attempts: int = 5  # botocore retries, with backoff, on throttling/5xx/connection errors
    retry_mode: str = "standard"  # standard | adaptive (client-side rate limiting too)
    multipart_threshold_mb: int = 64
    multipart_chunk_mb: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


class LocalStore:
    """A registry in a local folder; writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.after_put: Callable[[str], None] | None = None

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _atomic(self, key: str, write: Callable[[Path], None]) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            write(Path(tmp))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if self.after_put:
            self.after_put(key)

    def put_file(self, local: Path, key: str, sha256: str) -> None:
        def write(tmp: Path) -> None:
            shutil.copyfile(local, tmp)
            if sha256_file(tmp) != sha256:
                raise RegistryError(f"{self.uri(key)}: stored copy does not match sha256 {sha256}")
        self._atomic(key, write)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda tmp: tmp.write_bytes(data))

    @contextlib.contextmanager
    def _locked(self, key: str):  # type: ignore[no-untyped-def]
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Hidden (list_keys skips dot files) and never deleted: deleting a lock file another
        # process has open would let a third process lock a new inode at the same path.
        with open(dest.parent / f".{dest.name}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and a token for this state (its sha256), or None if absent."""
        data = self.get_bytes(key)
        return None if data is None else (data, sha256_bytes(data))

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``key`` only if it is still in the state ``token`` names (None: absent).

        Raises:
            WriteConflict: another writer changed or created it since.
        """
        with self._locked(key):
            now = self.get_tagged(key)
            if (now[1] if now else None) != token:
                raise WriteConflict(f"{self.uri(key)}: changed by another writer since it was read")
            self.put_bytes(key, data)

    def get_bytes(self, key: str) -> bytes | None:
        p = self._path(key)
        return p.read_bytes() if p.is_file() else None

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))  # temp and lock files

    def sha256(self, key: str) -> str | None:
        p = self._path(key)
        return sha256_file(p) if p.is_file() else None

    def size(self, key: str) -> int | None:
        p = self._path(key)
        return p.stat().st_size if p.is_file() else None

    def delete(self, keys: list[str]) -> None:
        """Remove ``keys`` (absent ones are no error)."""
        for key in keys:
            self._path(key).unlink(missing_ok=True)


class S3Store:
    """A registry under s3://bucket/prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str, options: S3Options | None = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.options = opts = options or S3Options()
        cfg = Config(retries={"mode": opts.retry_mode, "max_attempts": opts.max_attempts},
                     connect_timeout=opts.connect_timeout, read_timeout=opts.read_timeout)
        self.client = boto3.client("s3", endpoint_url=opts.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
                                   config=cfg)
        mb = 1 << 20
        self.transfer = TransferConfig(multipart_threshold=opts.multipart_threshold_mb * mb,
                                       multipart_chunksize=opts.multipart_chunk_mb * mb, use_threads=True)
        self.after_put: Callable[[str], None] | None = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}".rstrip("/")

    def _fail(self, what: str, key: str, e: Exception) -> RegistryError:
        return RegistryError(f"{what} {self.uri(key)} failed: {type(e).__name__}: {e}")

    def put_file(self, local: Path, key: str, sha256: str) -> None:
        extra = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}}
        try:
            self.client.upload_file(str(local), self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer)
        except Exception as e:  # noqa: BLE001 - boto3 raises many types; all mean "not stored"
            raise self._fail("upload of", key, e) from e
        stored = self.sha256(key)
        if stored != sha256:
            raise RegistryError(f"{self.uri(key)}: stored sha256 {stored} != local {sha256}")
        if self.after_put:
            self.after_put(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumAlgorithm="SHA256")
        except Exception as e:  # noqa: BLE001
            raise self._fail("write of", key, e) from e
        if self.after_put:
            self.after_put(key)

    def get_bytes(self, key: str) -> bytes | None:
        got = self.get_tagged(key)
        return None if got is None else got[0]

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and its ETag (the token ``put_if`` compares), or None if absent."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return obj["Body"].read(), obj["ETag"]
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._fail("read of", key, e) from e

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``key`` only if its ETag is still ``token`` (None: only if it does not exist).

        Raises:
            WriteConflict: another writer changed or created it since (S3 answered 412, or 409
                for a conditional write racing another, or 404 for an object deleted since).
            RegistryError: the endpoint failed, or does not implement conditional writes.
        """
        from botocore.exceptions import ClientError

        cond = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ChecksumAlgorithm="SHA256", **cond)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code"))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"):
                raise WriteConflict(f"{self.uri(key)}: changed by another writer since it was read "
                                    f"(S3: {code})") from e
            if code in ("NotImplemented", "501"):
                raise RegistryError(f"{self.uri(key)}: this S3 endpoint does not implement conditional "
                                    "writes (If-Match / If-None-Match), so alias updates could be lost; "
                                    "use an endpoint that does (AWS S3, MinIO) or a local registry") from e
            raise self._fail("conditional write of", key, e) from e
        except Exception as e:  # noqa: BLE001
            raise self._fail("conditional write of", key, e) from e
        if self.after_put:
            self.after_put(key)

    def download(self, key: str, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(dest), Config=self.transfer)
        except Exception as e:  # noqa: BLE001
            raise self._fail("download of", key, e) from e

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/") + "/")
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            return sorted(o["Key"][cut:] for page in pages for o in page.get("Contents", []))
        except Exception as e:  # noqa: BLE001
            raise self._fail("listing of", prefix, e) from e

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("head of", key, e) from e
        except Exception as e:  # noqa: BLE001
            raise self._fail("head of", key, e) from e

    def sha256(self, key: str) -> str | None:
        head = self._head(key)
        if head is None:
            return None
        b64 = head.get("ChecksumSHA256")
        # A multipart object's checksum is a checksum of part checksums, unless S3 says
        # FULL_OBJECT; multipart ETags end in "-<parts>" (some endpoints omit ChecksumType).
        single = "-" not in head.get("ETag", "-") or head.get("ChecksumType") == "FULL_OBJECT"
        if b64 and "-" not in b64 and single:
            return base64.b64decode(b64).hex()  # S3 hashed the whole object itself
        # Composite (multipart) or no checksum: read the object back and hash it.
        h = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for block in iter(lambda: body.read(CHUNK), b""):
                h.update(block)
        except Exception as e:  # noqa: BLE001
            raise self._fail("read of", key, e) from e
        return h.hexdigest()

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def delete(self, keys: list[str]) -> None:
        """Remove ``keys`` (absent ones are no error), up to 1000 per request as S3 allows."""
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            try:
                out = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True})
            except Exception as e:  # noqa: BLE001
                raise self._fail("delete of", batch[0], e) from e
            if out.get("Errors"):
                err = out["Errors"][0]
                raise RegistryError(f"delete of s3://{self.bucket}/{err.get('Key')} failed: {err.get('Code')}: {err.get('Message')}")


Store = LocalStore | S3Store


def open_store(uri: str, options: S3Options | None = None) -> Store:
    """Open ``s3://bucket/prefix`` as an S3Store, anything else as a local folder.

    Args:
        uri: the store location (registry.store).
        options: S3 client settings (ignored for local folders).
    Returns:
        The store.
    """
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: no bucket name")
        return S3Store(bucket, prefix, options)
    return LocalStore(Path(uri))
