"""MirroredStrategy over two logical CPU devices trains with the global batch scaled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tasks import train
from tasks.common.config import TrainFrozenConfig
from tests.model.tiny_data import make_shards
root = Path(sys.argv[1])
shards = make_shards(root / "shards")
cfg = TrainFrozenConfig(backbone="small_cnn", weights="none", epochs=1, batch_size=4)
s = train.run("frozen", cfg, shard_dir=shards, models_dir=root / "models", checkpoints=root / "ck",
              devices=["/cpu:0", "/cpu:1"], verbose=0)
print("EPOCHS", s.epochs_run)
"""


def test_two_replica_mirrored_training_scales_the_global_batch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "EPOCHS 1" in res.stdout, res.stdout + res.stderr[-3000:]
    meta = json.loads((tmp_path / "models/frozen/metadata.json").read_text())
    assert meta["global_batch_size"] == 8
