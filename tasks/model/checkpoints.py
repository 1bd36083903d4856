"""Training checkpoints that outlive the machine: each epoch's checkpoint mirrored to shared storage.

tasks/model/train_loop.py writes the full training state after every epoch into a local folder
(``epoch-NNNN/``: model and optimizer variables, the augmentation layers' RNG state, history,
early-stopping state, best weights). On a pool worker that folder dies with the pod, so when a
shared store is configured the same files also go to

    <store>/<stage>/<fingerprint>/epoch-NNNN/<file>            every file, verified by sha256 on upload
    <store>/<stage>/<fingerprint>/epoch-NNNN/MANIFEST.json     written LAST: epoch + sha256/size per file

A reader trusts an epoch only through its manifest, and only once every file it names has been
downloaded and matches its sha256; so a writer cut off mid-upload (endpoint gone, pod killed)
leaves at most files without a manifest, which nobody reads. After a manifest is written the
older epochs are deleted (manifest first). When the stage completes, its prefix is deleted.

Where (the first that is set):
  1. ``TAGSMITH_CHECKPOINTS``: ``s3://bucket/prefix`` or an absolute path (a shared filesystem);
     ``off`` disables the mirror.
  2. the DVC default remote, when it is on S3: ``<remote URL>/tagsmith-checkpoints`` (DVC's own
     objects live under ``files/`` and ``runs/`` there, so it never touches these), with the
     remote's ``endpointurl``.
  3. none: local checkpoints only (a laptop run; resuming still works in the same workspace).
It is deliberately not a params.yaml value: where scratch state lives changes no output, so it
must not change the stage's fingerprint (and retrain it).

The fingerprint is the stage's DVC run-cache key: the flow (flows/stages.repro) passes it in
``TAGSMITH_STAGE`` / ``TAGSMITH_STAGE_FINGERPRINT`` to the ``dvc repro`` it starts. A plain
``dvc repro`` (no flow) sets neither; tasks/train.py then keys on its own content hash (params,
data, upstream model, the code under tasks/).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tasks.common.errors import TagsmithError
from tasks.common.files import json_text, sha256_file
from tasks.registry.stores import S3Options, Store, open_store

ENV_STORE, ENV_STAGE, ENV_FINGERPRINT = "TAGSMITH_CHECKPOINTS", "TAGSMITH_STAGE", "TAGSMITH_STAGE_FINGERPRINT"
MANIFEST = "MANIFEST.json"
DVC_SUBDIR = "tagsmith-checkpoints"


class CheckpointConfigError(TagsmithError, ValueError):
    """The checkpoint store setting is unusable; the message names the setting and the value."""


def parse_location(value: str, source: str = ENV_STORE) -> str:
    """Validate a store location: ``s3://bucket[/prefix]`` or an absolute local path."""
    if value.startswith("s3://"):
        bucket = value[5:].partition("/")[0]
        if not bucket:
            raise CheckpointConfigError(f"{source}={value!r}: no bucket name (expected s3://bucket/prefix)")
        return value.rstrip("/")
    if "://" in value:
        raise CheckpointConfigError(f"{source}={value!r}: only s3:// URLs or absolute paths are supported")
    if not os.path.isabs(value):
        raise CheckpointConfigError(f"{source}={value!r}: a local store must be an absolute path "
                                    "(a relative one would live in the run's throw-away workspace)")
    return value


def configured_location(root: Path = Path(".")) -> tuple[str, S3Options] | None:
    """Where checkpoints are mirrored, and how to talk to it (see the module docstring); None: nowhere."""
    explicit = os.environ.get(ENV_STORE, "").strip()
    if explicit.lower() == "off":
        return None
    if explicit:
        return parse_location(explicit), S3Options()
    if not (root / ".dvc").is_dir():
        return None
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    name = config.get("core", {}).get("remote")
    remote = config.get("remote", {}).get(name) if name else None
    if not remote or not str(remote.get("url", "")).startswith("s3://"):
        return None  # a local or non-S3 remote: nothing a process on another machine could read
    url = parse_location(f"{str(remote['url']).rstrip('/')}/{DVC_SUBDIR}", f"DVC remote '{name}'")
    return url, S3Options(endpoint_url=remote.get("endpointurl"))


def stage_fingerprint(stage: str) -> str | None:
    """The DVC fingerprint the flow passed for ``stage`` (None if none, or for another stage)."""
    if os.environ.get(ENV_STAGE) != stage:
        return None
    value = os.environ.get(ENV_FINGERPRINT, "").strip()
    return value or None


class RemoteCheckpoints:
    """One stage run's checkpoints in ``store`` under ``<stage>/<fingerprint>/``."""

    def __init__(self, store: Store, stage: str, fingerprint: str) -> None:
        if not fingerprint.isalnum():
            raise CheckpointConfigError(f"{stage}: fingerprint {fingerprint!r} is not a hash")
        self.store = store
        self.prefix = f"{stage}/{fingerprint}"

    def uri(self) -> str:
        return self.store.uri(self.prefix)

    def _epochs(self) -> list[int]:
        """Epochs that have a manifest, newest first."""
        found = []
        for key in self.store.list_keys(self.prefix):
            parts = key[len(self.prefix) + 1:].split("/")
            if len(parts) == 2 and parts[1] == MANIFEST and parts[0][:6] == "epoch-" and parts[0][6:].isdigit():
                found.append(int(parts[0][6:]))
        return sorted(found, reverse=True)

    def push(self, epoch_dir: Path, epoch: int) -> None:
        """Upload a finished epoch folder, manifest last; then drop older epochs.

        Raises:
            tasks.registry.stores.RegistryError: the store could not be written (after botocore's retries).
        """
        t0 = time.time()
        base = f"{self.prefix}/epoch-{epoch:04d}"
        files = {}
        for path in sorted(p for p in Path(epoch_dir).iterdir() if p.is_file()):
            sha = sha256_file(path)
            self.store.put_file(path, f"{base}/{path.name}", sha)
            files[path.name] = {"sha256": sha, "size": path.stat().st_size}
        manifest = {"epoch": epoch, "files": files}
        self.store.put_bytes(f"{base}/{MANIFEST}", json_text(manifest).encode())
        size = sum(f["size"] for f in files.values())
        print(f"checkpoint epoch {epoch} -> {self.store.uri(base)} ({size / 1e6:.1f} MB, {time.time() - t0:.1f} s)", flush=True)
        for old in self._epochs():
            if old != epoch:
                self._delete_epoch(old)

    def _delete_epoch(self, epoch: int) -> None:
        base = f"{self.prefix}/epoch-{epoch:04d}"
        self.store.delete([f"{base}/{MANIFEST}"])  # unreadable first, then its files
        self.store.delete(self.store.list_keys(base))

    def pull_latest(self, ckpt_dir: Path, newer_than: int = 0) -> int | None:
        """Download the newest verified epoch after ``newer_than`` into ``ckpt_dir/epoch-NNNN``.

        An epoch whose manifest is unreadable, or whose files are missing or differ from the
        manifest's sha256, is skipped (and the next older one tried). Returns the epoch, or None.
        """
        for epoch in self._epochs():
            if epoch <= newer_than:
                return None
            tmp = Path(ckpt_dir) / f"download-{epoch:04d}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if self._fetch(f"{self.prefix}/epoch-{epoch:04d}", epoch, tmp):
                final = Path(ckpt_dir) / f"epoch-{epoch:04d}"
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
                print(f"checkpoint epoch {epoch} <- {self.store.uri(self.prefix)}", flush=True)
                return epoch
            shutil.rmtree(tmp, ignore_errors=True)
        return None

    def _fetch(self, base: str, epoch: int, dest: Path) -> bool:
        try:
            manifest = json.loads(self.store.get_bytes(f"{base}/{MANIFEST}") or b"null")
            files = manifest["files"]
            assert manifest["epoch"] == epoch and isinstance(files, dict) and files
        except (ValueError, KeyError, TypeError, AssertionError):
            print(f"ignoring checkpoint {self.store.uri(base)}: unreadable manifest", flush=True)
            return False
        present = set(self.store.list_keys(base))
        for name, meta in files.items():
            if "/" in name or name.startswith(".") or f"{base}/{name}" not in present:
                print(f"ignoring checkpoint {self.store.uri(base)}: {name} missing", flush=True)
                return False
            self.store.download(f"{base}/{name}", dest / name)
            if sha256_file(dest / name) != meta.get("sha256"):
                print(f"ignoring checkpoint {self.store.uri(base)}: {name} does not match its sha256", flush=True)
                return False
        return True

    def delete_all(self) -> None:
        """Remove every checkpoint of this stage run (the stage completed)."""
        self.store.delete(self.store.list_keys(self.prefix))


def open_remote(stage: str, fingerprint: str, root: Path = Path(".")) -> RemoteCheckpoints | None:
    """The configured mirror for ``stage``'s run keyed ``fingerprint``, or None when none is configured."""
    where = configured_location(root)
    if where is None:
        return None
    url, options = where
    return RemoteCheckpoints(open_store(url, options), stage, fingerprint)
