"""Fixtures for the model tests: tiny shards (32 px, 4 classes) and tiny in-memory arrays."""

from __future__ import annotations

import pytest

from tests.model.tiny_data import images_and_labels, make_shards


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Train 16 / val 8 / test 8 images as TFRecord shards + index.json + policy.json."""
    return make_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture()
def tiny_arrays():
    """16 float32 images 0..255 [16,32,32,3] and multi-hot labels [16,4]."""
    x, y = images_and_labels(16)
    return x.astype("float32"), y
