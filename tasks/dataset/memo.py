"""A content-addressed memo of results ingest and augment can reuse, so new data costs only itself.

Ingest decodes and perceptually hashes every image and augment re-encodes every image into
shards; at the study's size that is minutes for each new data version, though a new slice adds
a few percent of the images. Results are a pure function of the input bytes and a *recipe*
(the parameters that affect them, plus the computing code's version), so they are stored under
a key holding both: ``sha256(input bytes)`` for an image, ``sha256(recipe, sorted (id, sha256,
labels) rows)`` for a group of shards. A lookup can only find the result the same computation
would give, so the memo only skips work and never changes an output (a test compares the
outputs cold, warm and disabled).

Layout under the location (a local folder, or ``s3://bucket/prefix`` so fresh workers of a pool
reuse what another computed)::

    tables/<table>/<sha256 of the pack>.tsv     key<TAB>value lines (one pack per run's new entries)
    blobs/<key>/<files>, blobs/<key>/meta.json  a group's files; meta.json (written last) lists
                                                them with their sizes and sha256s

Everything is written once and never changed: a pack is named by its content's hash and a blob
folder by its key, so concurrent writers never clash (same name, same bytes). A pack whose bytes
do not match its name, or a blob whose files do not match its meta.json, is ignored with a
warning. Where it lives comes from params.yaml's ``memo`` section, which no stage lists as a
param (moving the memo never makes a stage stale), or ``TAGSMITH_MEMO`` (a location, or ``off``).

Library only; ingest and augment use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from tasks.common.config import PARAMS_FILE, ConfigError, MemoConfig, parse_section, read_params
from tasks.common.files import sha256_file

ENV = "TAGSMITH_MEMO"
HEADER = "# tagsmith-memo 1\n"


def recipe_key(*parts: object) -> str:
    """sha256 of the JSON of ``parts``: the parameters and code versions a result depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def code_version(*files: str | Path) -> str:
    """sha256 over the source of the modules that compute a result: editing them retires its entries."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def _warn(msg: str) -> None:
    print(f"memo: {msg}", file=sys.stderr)


class Memo:
    """One memo location; see the module docstring for the layout."""

    def __init__(self, location: str, endpoint_url: str | None = None):
        import fsspec

        opts: dict = {}
        if location.startswith("s3://"):
            # listings are not cached: another worker may have added a pack since this one looked
            opts = {"use_listings_cache": False, "skip_instance_cache": True}
            endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint_url:
                opts["client_kwargs"] = {"endpoint_url": endpoint_url}
        self.fs, root = fsspec.core.url_to_fs(location, **opts)
        self.root = root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _put(self, path: str, data: bytes) -> None:
        """Create ``path`` with ``data`` whole or not at all (local: temp file + rename)."""
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            Path(tmp).write_bytes(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    # -- tables: small key -> value results (per image) -----------------------------------------

    def load(self, table: str) -> dict[str, str]:
        """Every entry of ``table``; packs that fail their hash check are skipped with a warning."""
        out: dict[str, str] = {}
        try:
            names = sorted(self.fs.glob(self._path("tables", table, "*.tsv")))
        except OSError as e:
            _warn(f"cannot list {self._path('tables', table)}: {e}; computing everything")
            return out
        for name in names:
            try:
                data = self.fs.cat_file(name)
            except OSError as e:
                _warn(f"{name}: unreadable ({e}); ignored")
                continue
            if hashlib.sha256(data).hexdigest() != name.rsplit("/", 1)[-1][:-4] or not data.startswith(HEADER.encode()):
                _warn(f"{name}: content does not match its name (corrupt or truncated); ignored")
                continue
            for line in data.decode().splitlines()[1:]:
                key, _, value = line.partition("\t")
                out[key] = value
        return out

    def add(self, table: str, entries: dict[str, str]) -> None:
        """Store ``entries`` as one new pack (nothing when empty). Keys and values hold no tab or newline."""
        if not entries:
            return
        data = (HEADER + "".join(f"{k}\t{v}\n" for k, v in sorted(entries.items()))).encode()
        try:
            self._put(self._path("tables", table, hashlib.sha256(data).hexdigest() + ".tsv"), data)
        except OSError as e:
            _warn(f"cannot write to {self.root}: {e}; results not memoized")

    # -- blobs: a group's output files ----------------------------------------------------------

    def get_files(self, key: str, dest: Path) -> dict | None:
        """Bring blob ``key``'s files into ``dest`` (a hard link where possible) and return its
        meta (``files``: [{name, size, sha256}], plus what the writer stored); None on a miss or
        when a file does not match the meta (then nothing it named is left in ``dest``)."""
        meta_path = self._path("blobs", key, "meta.json")
        try:
            meta = json.loads(self.fs.cat_file(meta_path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            _warn(f"{meta_path}: unreadable ({e}); ignored")
            return None
        got: list[Path] = []
        try:
            for f in meta["files"]:
                src, target = self._path("blobs", key, f["name"]), Path(dest) / f["name"]
                target.unlink(missing_ok=True)
                got.append(target)
                if self.local:
                    try:
                        os.link(src, target)
                    except OSError:
                        shutil.copyfile(src, target)
                else:
                    self.fs.get_file(src, str(target))
                if target.stat().st_size != f["size"] or sha256_file(target) != f["sha256"]:
                    raise ValueError(f"{src}: size or sha256 differs from meta.json")
        except (OSError, ValueError, KeyError, TypeError) as e:
            _warn(f"blob {key}: {e}; ignored, recomputing")
            for target in got:
                target.unlink(missing_ok=True)
            return None
        return meta

    def put_files(self, key: str, files: list[Path], meta: dict) -> None:
        """Store ``files`` (and ``meta``, written last: the blob exists once it does) as blob ``key``."""
        meta = dict(meta, files=[{"name": Path(f).name, "size": Path(f).stat().st_size, "sha256": sha256_file(Path(f))}
                                 for f in files])
        try:
            if self.fs.exists(self._path("blobs", key, "meta.json")):
                return
            for f in files:
                target = self._path("blobs", key, Path(f).name)
                if self.local:  # a hard link: outputs are never changed in place, only replaced
                    Path(target).parent.mkdir(parents=True, exist_ok=True)
                    tmp = f"{target}.{uuid.uuid4().hex}.tmp"
                    try:
                        os.link(f, tmp)
                    except OSError:
                        shutil.copyfile(f, tmp)
                    os.replace(tmp, target)
                else:
                    self.fs.put_file(str(f), target)
            self._put(self._path("blobs", key, "meta.json"), json.dumps(meta, sort_keys=True).encode())
        except OSError as e:
            _warn(f"cannot write blob {key} to {self.root}: {e}; results not memoized")


def open_memo(params: Path = PARAMS_FILE) -> Memo | None:
    """The memo this workspace uses: ``TAGSMITH_MEMO`` if set (``off``: none), else params.yaml's
    ``memo`` section (absent: the defaults); None when disabled."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return None if env.lower() in ("off", "0", "false", "none") else _opened(env, None, ENV)
    try:
        cfg = parse_section("memo", read_params(params).get("memo"), str(params))
    except ConfigError:
        if Path(params).is_file():
            raise
        cfg = MemoConfig()  # no params file (a library call): the defaults
    assert isinstance(cfg, MemoConfig)
    return _opened(cfg.location, cfg.endpoint_url, f"{params}: memo.location") if cfg.enabled else None


def _opened(location: str, endpoint_url: str | None, where: str) -> Memo:
    """``Memo(location)``, or a ConfigError naming where the location came from."""
    try:
        return Memo(location, endpoint_url)
    except (ValueError, ImportError) as e:  # fsspec: an unknown protocol, or its package missing
        raise ConfigError(f"{where} = {location!r}: not a usable memo location ({e}); use a folder or "
                          f"s3://bucket/prefix, or {ENV}=off") from None
