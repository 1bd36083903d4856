"""The model code is backend-neutral: the small CNN, and EfficientNet-Lite0 with its converted
ImageNet weights, each train a step on JAX.

Both checks run in one subprocess (KERAS_BACKEND is read once, at import): importing Keras on
JAX and starting XLA is most of each check's time, paid once. Each check runs on its own and
reports its own verdict, so one failing does not hide the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.weights.lite_convert import converted_weights

REPO = Path(__file__).resolve().parents[2]

SMALL_CNN = """
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
"""

# Phase 2 from block 6 on: the whole network runs forward under JAX, and the backward pass
# (what XLA takes longest to compile on a CPU) covers the top blocks, the head and the top.
LITE0 = """
from tasks.model import build as M
from tasks.model.backbones import build_base
from tasks.model.losses import make_loss
from tests.model.tiny_data import POLICY, images_and_labels
keras.utils.set_random_seed(0)
x, y = images_and_labels(4)
base = build_base("efficientnet_lite0", 32, LITE0_WEIGHTS)
model = M.build_model(base, "efficientnet_lite0", 4, policy=POLICY, seed=0)
model = M.unfreeze(model, unfreeze_from="block6a_expand_conv")
M.compile_model(model, make_loss("bce"), M.make_optimizer(1e-3, True, 2))
def kernel(name):
    return model.get_layer("base").get_layer(name).get_weights()[0].copy()
trained, frozen = kernel("top_conv"), kernel("stem_conv")
logs = model.train_on_batch(x.astype("float32"), y, return_dict=True)
assert np.isfinite(logs["loss"]), logs
assert not np.array_equal(trained, kernel("top_conv"))
assert np.array_equal(frozen, kernel("stem_conv"))
"""

RUNNER = """
import json, sys, traceback
import keras, numpy as np
assert keras.backend.backend() == "jax", keras.backend.backend()
for name, code in json.loads(sys.argv[1]).items():
    keras.backend.clear_session()
    try:
        exec(code, {"keras": keras, "np": np, "LITE0_WEIGHTS": sys.argv[2]})
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("JAX-FAILED", name, flush=True)
    else:
        print("JAX-OK", name, flush=True)
"""


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> str:
    """The subprocess's output (stdout and stderr) after both checks."""
    weights = converted_weights("efficientnet_lite0", tmp_path_factory.mktemp("keras-cache"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    checks = json.dumps({"small_cnn": SMALL_CNN, "efficientnet_lite0": LITE0})
    res = subprocess.run([sys.executable, "-c", RUNNER, checks, str(weights)], env=env,
                         capture_output=True, text=True, timeout=850)
    return f"exit {res.returncode}\n{res.stdout}\n{res.stderr[-3000:]}"


def test_small_cnn_trains_one_step_on_the_jax_backend(jax_run):
    assert "JAX-OK small_cnn\n" in jax_run, jax_run


@pytest.mark.slow
def test_efficientnet_lite0_trains_one_step_on_the_jax_backend(jax_run):
    assert "JAX-OK efficientnet_lite0\n" in jax_run, jax_run
