"""The model code is backend-neutral: the small CNN trains a step on JAX (in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import keras, numpy as np
assert keras.backend.backend() == "jax"
from tasks.model import build as M
from tasks.model.backbones import build_base
from tasks.model.losses import make_loss
from tests.model.tiny_data import POLICY, images_and_labels
keras.utils.set_random_seed(0)
x, y = images_and_labels(8)
model = M.build_model(build_base("small_cnn", 32), "small_cnn", 4, policy=POLICY, seed=0)
model = M.unfreeze(model, train_batchnorm=True)
M.compile_model(model, make_loss("asl"), M.make_optimizer(1e-3, True, 2))
before = model.get_layer("base").get_weights()[0].copy()
logs = model.train_on_batch(x.astype("float32"), y, return_dict=True)
assert np.isfinite(logs["loss"]) and {"map", "p_at_1"} <= set(logs), logs
assert not np.array_equal(before, model.get_layer("base").get_weights()[0])
print("JAX-OK")
"""


def test_small_cnn_trains_one_step_on_the_jax_backend():
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "JAX-OK" in res.stdout, res.stdout + res.stderr[-3000:]
