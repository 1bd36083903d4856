"""Read a legacy (non-zip) PyTorch ``.pth`` state dict into numpy arrays, without torch.

``torch.save`` before PyTorch 1.6 (and with ``_use_new_zipfile_serialization=False``) writes
one stream: five pickles (magic number, protocol version, system info, the object itself with
every tensor storage replaced by a *persistent id*, the list of storage keys in file order),
then each storage's raw bytes in that order, each preceded by its element count as int64. This
module reads exactly that, with the standard library's ``pickle`` and numpy.

Why not ``torch.load``: torch is a 700+ MB dependency for reading one 19 MB file, and
``torch.load`` of an untrusted pickle can run arbitrary code. The unpickler here resolves only
an allowlist of globals (OrderedDict, the tensor rebuild function, the typed storage classes),
so a malicious file fails with an error instead of executing anything.

Used by tasks/model/efficientnet_lite.py (the converter). Not a stage.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tasks.common.errors import DataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch.<X>Storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PthFormatError(DataError):
    """The file is not a legacy PyTorch pickle this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes come after the pickles."""

    key: str
    dtype: Any
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _LazyTensor:
    """A tensor view into a storage, materialised once the storage bytes are read."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        if not self.shape:
            return data[self.offset].copy()
        end = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1
        if end > data.size:
            raise PthFormatError(f"tensor view past the end of storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], self.shape, tuple(s * data.itemsize for s in self.stride))
        return np.array(view)  # a contiguous copy owning its memory


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):  # noqa: ARG001  (torch's signature)
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None):  # noqa: ARG001
    return data


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs; persistent ids become _Storage objects."""

    def __init__(self, f: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise PthFormatError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise PthFormatError(f"unknown persistent id {pid!r:.80}")
        storage_type, key, _location, numel, view_metadata = pid[1:6]
        if view_metadata is not None:
            raise PthFormatError("storage views (PyTorch < 0.4 files) are not supported")
        if not isinstance(storage_type, _StorageType):
            raise PthFormatError(f"unknown storage type {storage_type!r}")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self.storages[key]


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return OrderedDict((k, _materialise(v)) for k, v in obj.items())
    return obj


def read_state_dict(path: Path) -> OrderedDict[str, np.ndarray]:
    """Read a legacy-format ``.pth`` state dict.

    Args:
        path: the file written by ``torch.save(state_dict, path)`` in the legacy format.
    Returns:
        The state dict, parameter name -> numpy array (PyTorch layout, e.g. OIHW kernels).
    Raises:
        PthFormatError: a zip-format file, a wrong magic number or protocol, an object that is
            not a dict of tensors, or truncated storage bytes.
    """
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise PthFormatError(f"{path}: a zip-format .pth (PyTorch >= 1.6); this reader "
                                 f"handles the legacy format only")
        f.seek(0)
        try:
            magic = pickle.load(f)
            if magic != MAGIC_NUMBER:
                raise PthFormatError(f"{path}: not a legacy PyTorch file (magic {magic!r:.40})")
            if pickle.load(f) != PROTOCOL_VERSION:
                raise PthFormatError(f"{path}: unsupported legacy protocol version")
            sys_info = pickle.load(f)
            if not sys_info.get("little_endian", True):
                raise PthFormatError(f"{path}: big-endian files are not supported")
            storages: dict[str, _Storage] = {}
            obj = _Unpickler(f, storages).load()
            keys = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as e:
            raise PthFormatError(f"{path}: not a readable legacy PyTorch pickle: {e}") from e
        for key in keys:
            storage = storages[str(key)]
            header = f.read(8)
            if len(header) != 8:
                raise PthFormatError(f"{path}: truncated before storage {key}")
            numel = int(np.frombuffer(header, "<i8")[0])
            if numel != storage.numel:
                raise PthFormatError(f"{path}: storage {key} holds {numel} elements, "
                                     f"the pickle says {storage.numel}")
            nbytes = numel * np.dtype(storage.dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise PthFormatError(f"{path}: truncated storage {key}")
            storage.data = np.frombuffer(raw, np.dtype(storage.dtype).newbyteorder("<"))
    if not isinstance(obj, dict):
        raise PthFormatError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return _materialise(obj)
