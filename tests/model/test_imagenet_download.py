"""``weights: imagenet`` downloads through keras.utils.get_file, verified by the known hash.

A local HTTP server on 127.0.0.1 plays the weights storage (no test touches the internet): a
test backbone's registry entry points at it. Reachable: downloaded once into $KERAS_HOME/models,
verified, loaded, and named with its sha256 in the origin. A file with the wrong hash: refused,
nothing left in the cache. Unreachable: the clear offline error naming the file and where to put it.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from tasks.model.backbones import BACKBONES, Backbone
from tasks.weights.resolve import WeightsError, build_base_with_weights

FILE = "tiny_notop.weights.h5"


def tiny_net(include_top: bool = False, weights: str | None = None,
             input_shape: tuple[int, int, int] = (8, 8, 3)) -> keras.Model:
    """A keras.applications-style constructor small enough to serve in a test."""
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layers.Conv2D(4, 3, name="conv")(inputs), name="tiny")
    if weights is not None:
        model.load_weights(weights)
    return model


class _Server:
    """ThreadingHTTPServer over a folder on 127.0.0.1, counting the GET requests it answers."""

    def __init__(self, root: Path):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture()
def served(tmp_path):
    """(server, the served file's weights, its sha256); the server stops after the test."""
    keras.utils.set_random_seed(1)
    root = tmp_path / "storage" / "weights"
    root.mkdir(parents=True)
    src = tiny_net()
    src.save_weights(root / FILE)
    server = _Server(tmp_path / "storage")
    yield server, src.get_weights(), hashlib.sha256((root / FILE).read_bytes()).hexdigest()
    server.stop()


@pytest.fixture()
def keras_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _register(monkeypatch, url: str, file_hash: str) -> None:
    monkeypatch.setitem(BACKBONES, "tiny", Backbone(tiny_net, 8, "unit", "unit: x/255", FILE,
                                                    url, file_hash))


def test_reachable_weights_are_downloaded_verified_and_then_cached(served, keras_home, monkeypatch):
    server, weights, sha = served
    _register(monkeypatch, server.url + "weights/", sha)
    base, origin = build_base_with_weights("tiny", 8, "imagenet")
    assert origin == f"imagenet:{FILE} sha256:{sha}"
    assert (keras_home / "models" / FILE).is_file()
    for got, want in zip(base.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    assert server.requests == [f"/weights/{FILE}"]
    build_base_with_weights("tiny", 8, "imagenet")  # cached and still verified: no new request
    assert len(server.requests) == 1


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(served, keras_home, monkeypatch):
    server, _, sha = served
    _register(monkeypatch, server.url + "weights/", "0" * 64)
    with pytest.raises(WeightsError, match="could not be downloaded"):
        build_base_with_weights("tiny", 8, "imagenet")
    assert server.requests  # it did try
    assert not (keras_home / "models" / FILE).exists()


def test_unreachable_weights_give_the_clear_offline_error(keras_home, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights/"
    _register(monkeypatch, url, "0" * 64)
    with pytest.raises(WeightsError, match="offline") as err:
        build_base_with_weights("tiny", 8, "imagenet")
    message = str(err.value)
    assert str(keras_home / "models" / FILE) in message and url + FILE in message
    assert "KERAS_HOME" in message
    assert not (keras_home / "models" / FILE).exists()
