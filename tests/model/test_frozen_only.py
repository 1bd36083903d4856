"""train_full.epochs: 0 passes the frozen model on unchanged and says so (sweeps' frozen-only rows)."""

import json

from tasks import train
from tasks.common.config import parse_section


def test_zero_full_epochs_is_valid_config():
    assert parse_section("train_full", {"epochs": 0}).epochs == 0


def test_frozen_only_copies_the_frozen_model_and_marks_it(tmp_path):
    frozen, full = tmp_path / "frozen", tmp_path / "full"
    frozen.mkdir()
    (frozen / "model.keras").write_bytes(b"weights")
    (frozen / "history.csv").write_text("epoch,loss\n1,0.5\n")
    (frozen / "metadata.json").write_text(json.dumps({"phase": "frozen", "params": {"epochs": 3}, "best_epoch": 1}))
    summary = train.frozen_only(frozen, full)
    assert (full / "model.keras").read_bytes() == b"weights"
    meta = json.loads((full / "metadata.json").read_text())
    assert meta["phase"] == "full" and meta["frozen_only"] is True and meta["frozen_params"] == {"epochs": 3}
    assert summary.epochs_run == 0
