"""Small crafted weight files that ask the loader for far more memory than they hold.

Each writer puts one file class (under 10 MB on disk) into a folder and returns the path
to load. The loader tests check each gets a ModelError naming the limit; the benchmark
``benchmarks/hostile_files_rss.py`` measures the peak memory of loading each one.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from napari_freedrag._tests import nvidia_pickles as nv

TINY_CONFIG = {
    "z_dim": 8,
    "c_dim": 0,
    "w_dim": 8,
    "img_resolution": 8,
    "img_channels": 3,
    "mapping_kwargs": {"num_layers": 1},
    "channel_base": 64,
    "channel_max": 8,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageRef:
    """Pickles (through :class:`_Pickler`) as a persistent storage reference."""

    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _StorageRef) else None


def _dumps(obj, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def legacy_blob(numel: int, data: bytes, storage_type=torch.FloatStorage) -> bytes:
    """A legacy ``torch.save`` stream of one storage that declares ``numel`` elements."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}
    header = b"".join(pickle.dumps(v, protocol=2) for v in (_LEGACY_MAGIC, 1001, sys_info))
    body = _dumps(_StorageRef(("storage", storage_type, "0", "cpu", numel, None)))
    return header + body + pickle.dumps(["0"], protocol=2) + numel.to_bytes(8, "little") + data


def _view(storage_blob: bytes, size, stride, offset: int = 0):
    """A pickled tensor record: ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``."""
    storage = nv.Reduce(torch.storage._load_from_bytes, storage_blob)
    return nv.Reduce(
        torch._utils._rebuild_tensor_v2,
        storage,
        offset,
        tuple(size),
        tuple(stride),
        False,
        OrderedDict(),
    )


def _generator_pickle(path: Path, parameters: dict) -> Path:
    state = nv.module_state(init_kwargs=TINY_CONFIG)
    state["_parameters"] = OrderedDict(parameters)
    nv.write_pickle(path, {"G_ema": nv.persistent("Generator", state)}, protocol=2)
    return path


def stride0_views(folder: Path) -> Path:
    """Ten float16 views of one element, each declaring 2^28 elements (1 GiB as float32)."""
    blob = legacy_blob(1, b"\0\0", torch.HalfStorage)
    views = {f"w{i}": _view(blob, (2**28,), (0,)) for i in range(10)}
    return _generator_pickle(folder / "stride0.pkl", views)


def stride0_4tb(folder: Path) -> Path:
    """One float32 view of one element declaring 4 TB."""
    blob = legacy_blob(1, b"\0" * 4)
    return _generator_pickle(folder / "stride0-4tb.pkl", {"w": _view(blob, (2**40,), (0,))})


def overlapping_views(folder: Path) -> Path:
    """Three hundred full-size views of one 4 MB storage (1.2 GB once copied)."""
    numel = 2**20
    blob = legacy_blob(numel, np.zeros(numel, np.float32).tobytes())
    storage = nv.Reduce(torch.storage._load_from_bytes, blob)
    views = {
        f"w{i}": nv.Reduce(
            torch._utils._rebuild_tensor_v2,
            storage,
            0,
            (numel,),
            (1,),
            False,
            OrderedDict(),
        )
        for i in range(300)
    }
    return _generator_pickle(folder / "overlap.pkl", views)


def storage_declares_more(folder: Path) -> Path:
    """A storage blob declaring 2^33 floats (32 GiB) with 16 bytes of data."""
    blob = legacy_blob(2**33, b"\0" * 16)
    return _generator_pickle(folder / "short-storage.pkl", {"w": _view(blob, (4,), (1,))})


def pt_zip_member_lies(folder: Path) -> Path:
    """A zip ``.pt`` whose pickle declares a 2^32-float storage backed by an 8-byte member."""
    ref = _StorageRef(("storage", torch.FloatStorage, "0", "cpu", 2**32))
    tensor = nv.Reduce(torch._utils._rebuild_tensor_v2, ref, 0, (2,), (1,), False, OrderedDict())
    path = folder / "lies.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lies/data.pkl", _dumps({"mapping.fc0.weight": tensor}))
        archive.writestr("lies/data/0", b"\0" * 8)
    path.with_suffix(".json").write_text(json.dumps(TINY_CONFIG))
    return path


def npz_bomb(folder: Path, megabytes: int = 768) -> Path:
    """A deflated ``.npz`` member of zeros that inflates to ``megabytes`` MiB."""
    from numpy.lib import format as npy

    numel = megabytes * 2**20 // 4
    path = folder / "bomb.npz"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("mapping.fc0.weight.npy", "w", force_zip64=True) as member,
    ):
        npy.write_array_header_1_0(
            member, {"descr": "<f4", "fortran_order": False, "shape": (numel,)}
        )
        chunk = bytes(16 * 2**20)
        for _ in range(megabytes // 16):
            member.write(chunk)
    (folder / "bomb.json").write_text(json.dumps(TINY_CONFIG))
    return path


def npz_header_lies(folder: Path) -> Path:
    """An ``.npz`` member whose header declares 2^34 floats over a few bytes of data."""
    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (2**34,)})
    path = folder / "header.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", buffer.getvalue() + b"\0" * 64)
    (folder / "header.json").write_text(json.dumps(TINY_CONFIG))
    return path


def tf_ndarray_call(folder: Path) -> Path:
    """A TF-era pickle whose variable calls ``numpy.ndarray((2**31,), 'f8')`` (16 GiB)."""
    network = nv.Network(
        "Gs", {"resolution": 8}, {"dlatent_avg": nv.Reduce(np.ndarray, (2**31,), "f8")}
    )
    path = folder / "tf-ndarray.pkl"
    nv.write_pickle(path, (network,), protocol=3)
    return path


def tf_repeated_array(folder: Path) -> Path:
    """A TF-era 1024 px pickle whose every variable is one memoised 8 MB array."""
    shared = np.zeros((32, 32, 32, 64), np.float32)
    mapping = {f"Dense{i}/{p}": shared for i in range(8) for p in ("weight", "bias")}
    synthesis = {}
    res = 4
    while res <= 1024:
        for layer in ("Conv", "Conv0_up", "Conv1", "ToRGB"):
            for leaf in ("weight", "bias", "noise_strength", "mod_weight", "mod_bias"):
                synthesis[f"{res}x{res}/{layer}/{leaf}"] = shared
        synthesis[f"{res}x{res}/Const/const"] = shared
        res *= 2
    synthesis.update({f"noise{i}": shared for i in range(17)})
    static = {"resolution": 1024, "latent_size": 512, "dlatent_size": 512, "fmap_base": 16384}
    gs = nv.Network(
        "Gs",
        static,
        {"dlatent_avg": shared},
        {
            "mapping": nv.Network("G_mapping", static, mapping),
            "synthesis": nv.Network("G_synthesis", static, synthesis),
        },
    )
    path = folder / "tf-repeat.pkl"
    nv.write_pickle(path, (gs,), protocol=3)
    return path


def _json_config(folder: Path, name: str, **changes) -> Path:
    from safetensors.torch import save_file

    path = folder / f"{name}.safetensors"
    save_file({"mapping.fc0.weight": torch.zeros(8, 8)}, str(path))
    path.with_suffix(".json").write_text(json.dumps({**TINY_CONFIG, **changes}))
    return path


def json_resolution_32768(folder: Path) -> Path:
    return _json_config(folder, "res32768", img_resolution=32768)


def json_resolution_2_20(folder: Path) -> Path:
    return _json_config(folder, "res2e20", img_resolution=2**20)


def json_wide_channels(folder: Path) -> Path:
    return _json_config(folder, "wide", channel_max=10**6, channel_base=10**9)


def deep_nesting(folder: Path) -> Path:
    """A pickle of 200 000 nested lists (recursion, not memory)."""
    path = folder / "deep.pkl"
    path.write_bytes(b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".")
    return path


def memo_slot(folder: Path) -> Path:
    """Ten bytes whose one ``LONG_BINPUT`` names memo slot 2^28 (C pickle: 4 GiB zeroed)."""
    path = folder / "memo.pkl"
    path.write_bytes(b"\x80\x02)r" + (2**28).to_bytes(4, "little") + b".")
    return path


def bytearray_declares_more(folder: Path) -> Path:
    """A protocol-5 ``BYTEARRAY8`` declaring 16 GiB over 16 bytes of data."""
    path = folder / "bytearray.pkl"
    path.write_bytes(b"\x80\x05\x96" + (2**34).to_bytes(8, "little") + bytes(16) + b".")
    return path


#: Every class, by name: the benchmark and the tests walk this.
FILE_CLASSES = {
    "stride-0 views (10 x 1 GiB)": stride0_views,
    "stride-0 view of 4 TB": stride0_4tb,
    "300 overlapping views": overlapping_views,
    "storage declaring 32 GiB": storage_declares_more,
    ".pt zip member shorter than declared": pt_zip_member_lies,
    ".npz zip bomb (768 MiB)": npz_bomb,
    ".npz header declaring 64 GiB": npz_header_lies,
    "TF-era numpy.ndarray call (16 GiB)": tf_ndarray_call,
    "TF-era 1024 px, one repeated array": tf_repeated_array,
    "JSON img_resolution 32768": json_resolution_32768,
    "JSON img_resolution 2^20": json_resolution_2_20,
    "JSON channel_max 10^6": json_wide_channels,
    "200 000 nested lists": deep_nesting,
    "pickle memo slot 2^28": memo_slot,
    "BYTEARRAY8 declaring 16 GiB": bytearray_declares_more,
}
