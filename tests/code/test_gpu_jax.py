"""benchmarks/gpu_jax.py runs as it would on the GPU machine (Keras on JAX, TensorFlow absent),
here on the CPU with a tiny model, and writes a result file of the harness's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_wheels
from benchmarks.common import SCHEMA_KEYS

PROJECT = Path(__file__).resolve().parents[2]
# The GPU machine has no TensorFlow: make importing it fail, as it would there.
NO_TF = """
import runpy, sys
class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("no TensorFlow on the GPU machine")
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = ["benchmarks/gpu_jax.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_jax.py", run_name="__main__")
"""


def test_gpu_benchmark_runs_without_tensorflow_on_the_jax_backend(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "JAX_PLATFORMS")}
    out = subprocess.run(
        [sys.executable, "-c", NO_TF, "--backbones", "small_cnn", "--image-size", "32", "--batch", "8",
         "--steps", "2", "--reps", "3", "--device", "cpu", "--out", str(tmp_path), "--max-foreign-load", "1000"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    r = json.loads((tmp_path / "gpu_jax.json").read_text())
    assert set(SCHEMA_KEYS) <= set(r)
    assert r["params"]["device"] == "cpu" and r["params"]["precision"] == "mixed_float16"
    assert r["machine"]["jax_devices"] == ["cpu:cpu"]
    steps, images = r["results"]["small_cnn/steps_per_s"], r["results"]["small_cnn/images_per_s"]
    assert len(steps["reps"]) == 3 and steps["kept"] == 3 and steps["median"] > 0
    assert abs(images["median"] - 8 * steps["median"]) <= 0.01 * images["median"] + 0.1
    assert r["ratios"]["small_cnn/images_per_s_vs_nvidia_a100_resnet50"] > 0
    assert r["provenance_source"] == "git" and r["provenance"]["commit"]


def test_wheel_list_covers_what_keras_requires_except_what_jax_brings():
    from importlib import metadata

    required = {req.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for req in metadata.requires("keras") or [] if "extra ==" not in req}
    assert required - {"numpy", "ml-dtypes"} <= set(gpu_wheels.PACKAGES)
    assert "keras" in gpu_wheels.PACKAGES and not {"numpy", "ml-dtypes"} & set(gpu_wheels.PACKAGES)
