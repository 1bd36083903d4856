"""The one way tagsmith writes JSON and hashes files.

JSON artifacts are stable (sorted keys, two-space indent, trailing newline) so that equal
content gives equal bytes, which is what DVC hashes: an artifact that differs only in key
order would make every later stage look stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  # hash in 1 MiB reads: a model file never has to fit in memory


def json_text(obj: Any) -> str:
    """``obj`` as stable JSON text (sorted keys, indent 2, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=2) + "\n"


def write_json(path: Path, obj: Any) -> Path:
    """Write ``obj`` to ``path`` as stable JSON (see ``json_text``); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text(obj))
    return path


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
