"""Gather the wheels ``benchmarks/gpu_jax.py`` needs on the GPU machine into ``.whl/``.

    make gpu-wheels          # = python -m benchmarks.gpu_wheels

The GPU machine has Python 3.12 with JAX (CUDA) and PyTorch but neither TensorFlow nor Keras,
and no network. This downloads, at the versions of this checkout's lock (what the tests ran
with), Keras and every package Keras requires that such a box lacks (its Requires-Dist, plus
theirs: rich -> markdown-it-py -> mdurl, pygments; optree -> typing-extensions), and what
tagsmith's config models import (pydantic, pyyaml). numpy and
ml-dtypes are left out on purpose: JAX brings its own, and shadowing them could break it.
Binary wheels are for CPython 3.12 manylinux x86_64; pure-Python ones for any platform.

It also writes ``.whl/provenance.json`` (this checkout's commit and dirt), because the copy
of the tree that reaches the GPU machine may have no ``.git``: gpu_jax.py reports that file's
commit then, saying where it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.common import PROJECT, run_provenance

WHEELS = PROJECT / ".whl"
PACKAGES = ("keras", "absl-py", "namex", "optree", "h5py", "rich", "markdown-it-py", "mdurl", "pygments",
            "packaging", "typing-extensions",
            # tagsmith's own config models (tasks/common/config.py: the augmentation policy)
            "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "pyyaml")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_MB = 64  # what one call to the GPU machine carries


def pip_download(spec: str, dest: Path, pip_python: str) -> None:
    """Download one wheel (no dependencies) for CPython 3.12 on x86_64 Linux."""
    cmd = [pip_python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
           "--abi", "abi3", "--abi", "none", *(f"--platform={p}" for p in (*PLATFORMS, "any")), "-d", str(dest), spec]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pip download {spec} with {pip_python} failed (PIP_PYTHON names a Python with "
                           f"pip):\n{(out.stdout + out.stderr)[-2000:]}")


def gather(dest: Path = WHEELS, pip_python: str | None = None) -> list[Path]:
    """Fill ``dest`` with the wheels (old ones removed) and ``provenance.json``; returns the wheels."""
    # The project's venv has no pip (uv manages it); make passes a Python that has one.
    pip_python = pip_python or os.environ.get("PIP_PYTHON") or sys.executable
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in PACKAGES:
        spec = f"{name}=={metadata.version(name)}"
        print(f"  {spec}", flush=True)
        pip_download(spec, dest, pip_python)
    wheels = sorted(dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    if total > LIMIT_MB:
        raise RuntimeError(f"{total:.1f} MiB of wheels: more than one call carries ({LIMIT_MB} MiB)")
    (dest / "provenance.json").write_text(json.dumps(run_provenance(), indent=2, sort_keys=True) + "\n")
    print(f"{len(wheels)} wheels, {total:.1f} MiB in {dest}")
    return wheels


if __name__ == "__main__":
    try:
        gather()
    except RuntimeError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
