"""The legacy .pth reader: the real package file, hand-written files in the legacy layout
(strided views, shared storages, int64), and files it must refuse without executing them."""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

from tasks.weights.lite_convert import pth_path
from tasks.weights.pth_reader import MAGIC_NUMBER, PROTOCOL_VERSION, PthFormatError, read_state_dict


def test_the_packaged_lite0_file_reads_as_its_state_dict():
    sd = read_state_dict(pth_path("efficientnet_lite0"))
    assert len(sd) == 296 and list(sd)[0] == "_conv_stem.weight"
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.bias"].shape == (1000,)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.isfinite(sd["_fc.weight"]).all() and sd["_bn0.running_var"].min() >= 0


# --- a minimal writer of the legacy layout, with stand-ins for torch's globals -------------

class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        return (_fake_torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.shape, self.stride, False, OrderedDict()))


class _StorageRef:
    def __init__(self, key, kind, data):
        self.key, self.kind, self.data = key, kind, data


_fake_torch = types.ModuleType("torch")
_fake_torch._utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):  # only pickled by reference, never called
    raise AssertionError


_rebuild_tensor_v2.__module__ = "torch._utils"
_fake_torch._utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for _name in ("FloatStorage", "LongStorage"):
    setattr(_fake_torch, _name, type(_name, (), {"__module__": "torch"}))


def write_legacy(obj, storages: list[_StorageRef]) -> bytes:
    """torch.save's legacy stream: 5 pickles, then each storage as int64 numel + raw bytes."""
    out = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _StorageRef):
                return ("storage", getattr(_fake_torch, o.kind), o.key, "cpu", o.data.size, None)
            return None

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": _fake_torch, "torch._utils": _fake_torch._utils})
    try:
        for record in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(record, out, protocol=2)
        P(out, protocol=2).dump(obj)
        pickle.dump([s.key for s in storages], out, protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    for s in storages:
        out.write(np.int64(s.data.size).tobytes() + s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def test_views_offsets_and_shared_storages_are_rebuilt(tmp_path):
    floats = _StorageRef("7", "FloatStorage", np.arange(12, dtype=np.float32))
    longs = _StorageRef("9", "LongStorage", np.array([5, -3], np.int64))
    sd = OrderedDict([
        ("a", _Tensor(floats, 0, (3, 4), (4, 1))),
        ("a_t", _Tensor(floats, 0, (4, 3), (1, 4))),  # a transposed view of the same storage
        ("tail", _Tensor(floats, 10, (2,), (1,))),
        ("n", _Tensor(longs, 1, (), ())),
    ])
    path = tmp_path / "x.pth"
    path.write_bytes(write_legacy(sd, [floats, longs]))
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["a"], np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(got["a_t"], np.arange(12).reshape(3, 4).T)
    np.testing.assert_array_equal(got["tail"], [10, 11])
    assert got["n"] == -3 and got["n"].dtype == np.int64


def test_truncated_storage_bytes_are_an_error(tmp_path):
    floats = _StorageRef("1", "FloatStorage", np.ones(8, np.float32))
    data = write_legacy({"w": _Tensor(floats, 0, (8,), (1,))}, [floats])
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:-5])
    with pytest.raises(PthFormatError, match="truncated storage"):
        read_state_dict(path)


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out = io.BytesIO()
    for record in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}, {"w": Evil()}):
        pickle.dump(record, out, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(out.getvalue())
    with pytest.raises(PthFormatError, match="refusing to load"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04rest-of-a-zip", "zip-format"),
    (pickle.dumps(12345, protocol=2), "not a legacy PyTorch file"),
    (b"\x00\x01garbage", "not a readable legacy PyTorch pickle"),
])
def test_other_files_are_refused_with_a_clear_error(tmp_path, content, message):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(PthFormatError, match=message):
        read_state_dict(path)
