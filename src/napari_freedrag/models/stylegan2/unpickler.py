"""A pickle reader that rebuilds weights and plain values only, within a memory budget.

NVIDIA's ``.pkl`` files embed the Python source of the network and NVIDIA's own loader
executes it. We never do: every network object becomes an inert :class:`PersistentRecord`
of its ``state`` (``module_src`` is dropped unread), every global outside a short list of
tensor and container builders is refused with :class:`UnsafeCheckpointError` naming it,
and tensor storages (nested legacy ``torch.save`` blobs, zip members of ``.pt`` files) are
read by this module too, so nothing is handed to a general-purpose unpickler. Every length
and memo index a file declares is checked against the file before anything is allocated
for it, and each storage, array and tensor view is charged to a
:class:`~.budget.LoadBudget` before it is built.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_freedrag.errors import ModelError, UnsafeCheckpointError
from napari_freedrag.models.stylegan2.budget import LoadBudget, element_count

try:  # NumPy >= 1.26 / 2.x name; files written with NumPy 1 say numpy.core
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - old NumPy
    from numpy.core import multiarray as _np_multiarray

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_ARRAY_KINDS = "biuf"


class PersistentRecord:
    """An NVIDIA persistent network object as read here: its class name and ``state`` dict."""

    def __init__(self, class_name: str, state: dict):
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r})"


class ForeignModule:
    """Stand-in for a plain ``torch.nn`` module class found in a pickle: keeps its state only."""

    class_name = "torch.nn.Module"
    state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


class TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network`` (TF-era files): keeps the pickled state
    (variables as NumPy arrays, kwargs, components); ``build_module_src`` is never run."""

    state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))


class AttrDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict that tolerates a pickled state."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


class PendingArray:
    """A NumPy array as pickled (``_reconstruct`` then a state): built in ``__setstate__``
    only after its declared size is checked against the stored bytes and the budget."""

    array: np.ndarray | None = None

    def __init__(self, reader: TensorReader):
        self._reader = reader

    def __setstate__(self, state):
        self.array = self._reader.array_from_state(state)


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: usable as ``_reconstruct``'s argument, never called
    (calling it would allocate whatever shape the file asks for)."""

    def __new__(cls, *args, **kwargs):
        raise ModelError("the file calls numpy.ndarray directly to allocate an array")


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: only their dtype is used."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _reconstruct_persistent_obj(meta):
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), dict)
    ):
        raise ModelError("a persistent object in the file is not a pickled network class")
    return PersistentRecord(str(meta.get("class_name", "?")), meta["state"])


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise ModelError("a parameter in the file holds no tensor")
    return data


def _copyreg_reconstructor(cls, base, state):
    if cls not in (ForeignModule, AttrDict, TFNetwork) or base not in (object, dict):
        raise ModelError("the file rebuilds an object of an unexpected class")
    return cls()


def _latin1_bytes(text, encoding="utf-8"):
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or encoding != "latin1":
        raise ModelError("the file encodes text in an unexpected way")
    return text.encode("latin1")


def _empty_bytes(*args):
    """Protocol-2 pickles store ``b''`` as ``bytes()``; ``bytes(n)`` would allocate n bytes."""
    if args:
        raise ModelError("the file builds a bytes object from arguments")
    return b""


_STATIC_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytes"): _empty_bytes,
    ("_codecs", "encode"): _latin1_bytes,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): _NdarrayClass,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("dnnlib.util", "EasyDict"): AttrDict,
    ("dnnlib", "EasyDict"): AttrDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
}


class TensorReader:
    """One load: the budget, and how much of each storage its views have used up so far."""

    def __init__(self, budget: LoadBudget):
        self.budget = budget
        self.source = budget.source
        self._credit: dict[int, int] = {}
        self._keep: list[Any] = []  # storages stay alive so their ids stay unique

    # --- objects the pickle asks for -------------------------------------------------

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _STATIC_GLOBALS:
            return _STATIC_GLOBALS[(module, name)]
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return self.rebuild_tensor
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self.storage_from_blob
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return self.reconstruct_array
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and _is_torch_module_class(module, name):
            return ForeignModule
        raise UnsafeCheckpointError(
            f"refusing to load {self.source}: the file asks to run {module}.{name}; "
            "napari-freedrag only reads weights"
        )

    def rebuild_tensor(self, storage, storage_offset, size, stride, *_ignored):
        """A view on a loaded storage, charged as the copy it becomes beyond its storage."""
        if not isinstance(storage, torch.TypedStorage):
            raise ModelError(
                f"{self.source}: a tensor is built on a {type(storage).__name__}, not a storage"
            )
        try:
            offset, size, stride = (
                int(storage_offset),
                tuple(map(int, size)),
                tuple(map(int, stride)),
            )
        except (TypeError, ValueError):
            raise ModelError(f"{self.source}: a tensor has a malformed shape") from None
        if len(size) != len(stride) or len(size) > 16 or min((offset, *size, *stride)) < 0:
            raise ModelError(f"{self.source}: a tensor has a malformed shape")
        count = element_count(size)
        if count:
            end = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True)) + 1
            if end > storage.size():
                raise ModelError(
                    f"{self.source}: a tensor reaches past its stored data (corrupt file)"
                )
        nbytes = count * storage.element_size()
        credit = self._credit.get(id(storage), 0)
        self._credit[id(storage)] = max(credit - nbytes, 0)
        if nbytes > credit:  # stride-0 or overlapping views: what they will become
            self.budget.charge(nbytes - credit, f"a tensor of shape {list(size)}")
        return torch._utils._rebuild_tensor(storage, offset, size, stride)

    def reconstruct_array(self, subtype, shape, dtype):
        if subtype is not _NdarrayClass:
            raise ModelError(f"{self.source}: an array is not a plain NumPy array")
        return PendingArray(self)

    def array_from_state(self, state) -> np.ndarray:
        try:
            _version, shape, dtype, fortran, data = state
            shape = tuple(int(n) for n in shape)
        except (TypeError, ValueError):
            raise ModelError(f"{self.source}: an array has a malformed state") from None
        if not isinstance(dtype, np.dtype) or dtype.kind not in _ARRAY_KINDS:
            raise ModelError(f"{self.source}: an array is not numeric (dtype {dtype!r})")
        if not isinstance(data, (bytes, bytearray)) or min(shape, default=0) < 0:
            raise ModelError(f"{self.source}: an array holds no raw numeric data")
        nbytes = element_count(shape) * dtype.itemsize
        if nbytes != len(data):
            raise ModelError(
                f"{self.source}: an array of shape {list(shape)} holds {len(data)} bytes, "
                f"not {nbytes} (corrupt file)"
            )
        self.budget.charge(nbytes, f"an array of shape {list(shape)}")
        flat = np.frombuffer(bytes(data), dtype=dtype)
        return flat.reshape(shape, order="F" if fortran else "C")

    # --- storages -----------------------------------------------------------------------

    def new_storage(self, dtype: torch.dtype, numel: int, available: int, what: str):
        """An uninitialised typed storage of ``numel`` elements, checked and charged first."""
        if not isinstance(numel, int) or numel < 0:
            raise ModelError(f"{self.source}: {what} declares a malformed size")
        nbytes = numel * torch._utils._element_size(dtype)
        self.budget.check_stored(nbytes, available, what)
        self.budget.charge(nbytes, what)
        typed = torch.TypedStorage(
            wrap_storage=torch.UntypedStorage(nbytes), dtype=dtype, _internal=True
        )
        self._credit[id(typed)] = nbytes
        self._keep.append(typed)
        return typed

    def storage_from_blob(self, blob):
        """Tensor storages in NVIDIA pickles are nested legacy ``torch.save`` streams."""
        if not isinstance(blob, (bytes, bytearray)):
            raise ModelError(f"{self.source}: a tensor storage is not stored as bytes")
        storage = read_legacy_stream(io.BytesIO(blob), len(blob), self)
        if not isinstance(storage, torch.TypedStorage):
            raise ModelError(f"{self.source}: a tensor storage blob holds no typed storage")
        return storage


class _OpcodeTable(dict):
    """The pure-Python unpickler's dispatch table, naming an unknown opcode as C's does."""

    def __missing__(self, code: int):
        raise pickle.UnpicklingError(f"invalid load key, {bytes([code])!r}")


class _DeclaredReads:
    """``file.read`` for the unpickler: a declared length is checked before it is read."""

    def __init__(self, read, reader: TensorReader):
        self._read = read
        self._reader = reader

    def __call__(self, nbytes: int) -> bytes:
        if nbytes > self._reader.budget.file_size:
            raise ModelError(
                f"{self._reader.source}: the pickle declares {nbytes} bytes of data, more "
                "than the whole file holds (corrupt or crafted file)"
            )
        data = self._read(nbytes)
        if len(data) < nbytes:
            raise EOFError("pickle data was truncated")
        return data


class _Unpickler(pickle._Unpickler):
    """Resolves globals through a :class:`TensorReader`; storages through ``storages``.

    Built on the pure-Python unpickler, not the C one: the C unpickler sizes its memo array
    to twice the largest index a PUT opcode names, so five bytes (one ``LONG_BINPUT``)
    made it allocate and zero up to 32 GiB, and its ``BYTEARRAY8`` reserves the declared
    length before reading. Here every length a file declares is checked against the file's
    size before it is read, a short read is a truncated file, and a memo slot must follow
    the objects stored so far, as every pickler writes them. Network pickles hold few
    opcodes (their bulk is a few hundred byte strings), so this costs tens of milliseconds.
    """

    dispatch = _OpcodeTable(pickle._Unpickler.dispatch)

    def __init__(self, file, reader: TensorReader, storages=None):
        super().__init__(file)
        self._reader = reader
        self._storages = storages
        self._file_read = _DeclaredReads(file.read, reader)

    def _memo_slot(self, index: int) -> None:
        if index > len(self.memo):
            raise ModelError(
                f"{self._reader.source}: a pickle memo slot declares index {index} after "
                f"only {len(self.memo)} stored objects (corrupt or crafted file)"
            )
        if not self.stack:
            raise pickle.UnpicklingError("unpickling stack underflow")
        self.memo[index] = self.stack[-1]

    def load_put(self):
        text = self.readline()[:-1]
        if not text.isdigit():
            raise pickle.UnpicklingError("PUT opcode argument is not a memo index")
        self._memo_slot(int(text))

    def load_binput(self):
        self._memo_slot(self.read(1)[0])

    def load_long_binput(self):
        self._memo_slot(int.from_bytes(self.read(4), "little"))

    def load_bytearray8(self):
        self.append(bytearray(self.read(int.from_bytes(self.read(8), "little"))))

    def load_extension(self):
        # copyreg's extension registry resolves a code through a process-wide cache,
        # bypassing find_class; network pickles never use it.
        raise UnsafeCheckpointError(
            f"{self._reader.source} names a global through a pickle extension code; "
            "network pickles never do, so it is refused unread"
        )

    dispatch.update(
        {
            pickle.PUT[0]: load_put,
            pickle.BINPUT[0]: load_binput,
            pickle.LONG_BINPUT[0]: load_long_binput,
            pickle.BYTEARRAY8[0]: load_bytearray8,
            pickle.EXT1[0]: load_extension,
            pickle.EXT2[0]: load_extension,
            pickle.EXT4[0]: load_extension,
        }
    )

    def find_class(self, module: str, name: str):
        return self._reader.find_class(module, name)

    def persistent_load(self, pid):
        if self._storages is None:
            raise ModelError(
                f"{self._reader.source} refers to external storage ({pid!r:.60}); not a weight file"
            )
        return self._storages(pid)


def _is_torch_module_class(module: str, name: str) -> bool:
    import importlib

    try:
        candidate = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(candidate, type) and issubclass(candidate, torch.nn.Module)


def _storage_dtype(storage_type, source: str) -> torch.dtype:
    if isinstance(storage_type, _StorageType):
        return storage_type.dtype
    if isinstance(storage_type, torch.dtype):
        return storage_type
    raise ModelError(f"{source}: a tensor storage has an unknown type")


def read_legacy_stream(stream, length: int, reader: TensorReader):
    """One legacy (non-zip) ``torch.save`` stream: header pickles, objects, raw storages."""
    source = reader.source

    def plain() -> Any:
        return _Unpickler(stream, reader).load()

    if plain() != _LEGACY_MAGIC or plain() != _LEGACY_PROTOCOL:
        raise ModelError(f"{source}: a tensor storage is not in torch's legacy format")
    sys_info = plain()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise ModelError(f"{source}: big-endian tensor storages are not supported")
    storages: dict[str, torch.TypedStorage] = {}

    def storage(pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise ModelError(f"{source}: a tensor storage has a malformed reference")
        _, storage_type, key, _location, numel, view = pid
        key = str(key)
        if key not in storages:
            dtype = _storage_dtype(storage_type, source)
            storages[key] = reader.new_storage(
                dtype, numel, length - stream.tell(), "a tensor storage"
            )
        if view is None:
            return storages[key]
        try:
            _view_key, offset, view_size = view[0], int(view[1]), int(view[2])
        except (TypeError, ValueError, IndexError):
            raise ModelError(f"{source}: a tensor storage view is malformed") from None
        base = storages[key]
        if offset < 0 or view_size < 0 or offset + view_size > base.size():
            raise ModelError(f"{source}: a tensor storage view reaches past its storage")
        size = base.element_size()
        sliced = base.untyped()[offset * size : (offset + view_size) * size]
        return torch.TypedStorage(wrap_storage=sliced, dtype=base.dtype, _internal=True)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        result = _Unpickler(stream, reader, storage).load()
        keys = plain()
        if not isinstance(keys, list):
            raise ModelError(f"{source}: the list of tensor storages is malformed")
        for key in keys:
            typed = storages.get(str(key))
            if typed is None:
                raise ModelError(f"{source}: a tensor storage is listed but never used")
            header = stream.read(8)
            nbytes = typed.nbytes()
            if len(header) != 8 or int.from_bytes(header, "little") != typed.size():
                raise ModelError(f"{source}: a tensor storage has the wrong size (corrupt file)")
            target = torch.empty(0, dtype=torch.uint8).set_(typed.untyped()).numpy()
            if nbytes and stream.readinto(memoryview(target)) != nbytes:
                raise ModelError(f"{source}: a tensor storage is truncated (download it again)")
    return result


def read_torch_zip(path: Path, reader: TensorReader):
    """A zip-format ``torch.save`` file: ``*/data.pkl`` plus one member per storage."""
    source = reader.source
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        pickles = [name for name in members if name.endswith("/data.pkl") or name == "data.pkl"]
        if len(pickles) != 1:
            raise ModelError(f"{source} is a zip file but not a torch.save archive")
        root = pickles[0][: -len("data.pkl")]
        order = members.get(root + "byteorder")
        if order is not None and archive.read(order).strip() not in (b"", b"little"):
            raise ModelError(f"{source}: big-endian torch files are not supported")
        storages: dict[str, torch.TypedStorage] = {}

        def storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise ModelError(f"{source}: a tensor storage has a malformed reference")
            _, storage_type, key, _location, numel = pid
            key = str(key)
            if key not in storages:
                info = members.get(f"{root}data/{key}")
                if info is None:
                    raise ModelError(f"{source}: tensor storage {key} is missing from the archive")
                dtype = _storage_dtype(storage_type, source)
                typed = reader.new_storage(dtype, numel, info.file_size, "a tensor storage")
                target = torch.empty(0, dtype=torch.uint8).set_(typed.untyped()).numpy()
                with archive.open(info) as member:
                    if typed.nbytes() and member.readinto(memoryview(target)) != typed.nbytes():
                        raise ModelError(f"{source}: tensor storage {key} is truncated")
                storages[key] = typed
            return storages[key]

        info = members[pickles[0]]
        reader.budget.check_stored(info.file_size, reader.budget.limit, "the archive's pickle")
        with archive.open(info) as data, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return _Unpickler(io.BytesIO(data.read()), reader, storage).load()


def unpickle(path: Path, reader: TensorReader) -> Any:
    """The object tree of a plain pickle (an NVIDIA ``.pkl``), storages read weights-only."""
    with open(path, "rb") as file, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        return _Unpickler(file, reader).load()


def read_torch_file(path: Path, reader: TensorReader) -> Any:
    """A ``torch.save`` file of either format, read with the same restricted unpickler."""
    if zipfile.is_zipfile(path):
        return read_torch_zip(path, reader)
    with open(path, "rb") as file:
        return read_legacy_stream(file, path.stat().st_size, reader)
