"""Reads PyTorch state dicts (`torch.save` files) into numpy, without PyTorch.

Both formats `torch.save` writes are read: the zip archive of PyTorch >= 1.6 (`data.pkl` plus
one file per storage) and the legacy stream (magic number, protocol, system info, the pickled
object, the storage keys, then each storage as an int64 element count and its bytes). The
pickles are read with a restricted unpickler that builds nothing but ordered dicts, tuples
and arrays: a weights file cannot run code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """A typed buffer; filled when its bytes are read."""

    def __init__(self, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.data: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_):
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage], legacy: bool):
        super().__init__(file)
        self.storages, self.legacy = storages, legacy

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        raise pickle.UnpicklingError(f"a weights file may not hold {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, numel[, view metadata])
        kind, dtype, key = pid[0], pid[1], str(pid[2])
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype)
        return self.storages[key]


def _tensors(obj: Any) -> Any:
    """Replaces the rebuilt-tensor markers in `obj` by numpy arrays."""
    if isinstance(obj, tuple) and len(obj) == 5 and obj[0] == "tensor":
        _, storage, offset, size, stride = obj
        itemsize = storage.dtype.itemsize
        flat = storage.data
        return np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * itemsize for s in stride]).copy()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _tensors(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tensors(v) for v in obj)
    return obj


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        root = pickled[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(archive.read(pickled)), storages, legacy=False).load()
        for key, storage in storages.items():
            storage.data = np.frombuffer(archive.read(f"{root}data/{key}"), storage.dtype)
    return obj


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch file (wrong magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info (byte order, type sizes)
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, storages, legacy=True).load()
        for key in pickle.load(f):
            storage = storages[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            data = f.read(count * storage.dtype.itemsize)
            storage.data = np.frombuffer(data, storage.dtype)
    return obj


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `torch.save`d state dict (optionally under 'state_dict') -> name -> numpy array."""
    path = os.fspath(path)
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, KeyError, StopIteration, struct.error) as e:
        raise ValueError(f"{path} is not a readable PyTorch state dict: {e}") from e
    obj = _tensors(obj)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {str(k): np.asarray(v) for k, v in obj.items() if isinstance(v, np.ndarray)}
