"""Tensor files that carry no network code: ``.pt``/``.pth`` state dicts, ``.safetensors``
and ``.npz`` weights, each with its generator config in a JSON file beside it (``.pt`` files
may hold ``{"config", "state_dict"}`` instead). Sizes are checked before data is read.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.budget import LoadBudget, element_count
from napari_freedrag.models.stylegan2.config import normalise_config

#: The most tensors a generator file may hold (real ones: a few hundred).
MAX_ENTRIES = 100_000
#: The largest generator config JSON read (real ones: under 2 KB).
MAX_JSON_BYTES = 1 * 2**20
_WIDE_DTYPES = ("F64", "I64", "U64")


def converted(tensor: torch.Tensor, name: str, budget: LoadBudget) -> torch.Tensor:
    """``tensor`` as float32 (floating point) or unchanged; a new copy is charged first."""
    if not tensor.is_floating_point():
        return tensor.detach()
    if tensor.dtype != torch.float32:
        budget.charge(element_count(tensor.shape) * 4, f"weight {name} as float32")
    return tensor.detach().to(torch.float32)


def load_torch_object(obj, path: Path, budget: LoadBudget):
    """``(config, state_dict)`` from what a ``torch.save`` file held."""
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("state_dict"), dict)
        and isinstance(obj.get("config"), dict)
    ):
        return normalise_config(obj["config"], path.name), as_tensor_dict(obj["state_dict"], budget)
    state_dict = as_tensor_dict(obj, budget)
    return normalise_config(_read_json_config(_config_beside(path)), path.name), state_dict


def load_safetensors(path: Path, budget: LoadBudget):
    from safetensors import SafetensorError, safe_open

    config_path = _config_beside(path)
    config = normalise_config(_read_json_config(config_path), config_path.name)
    state_dict = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as tensors:
            for name in tensors.keys():  # noqa: SIM118 - safe_open is not a mapping
                stored = tensors.get_slice(name)
                shape, wide = stored.get_shape(), stored.get_dtype() in _WIDE_DTYPES
                budget.charge(element_count(shape) * (8 if wide else 4), f"tensor {name}")
                state_dict[name] = tensors.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"could not read {path.name} as safetensors ({exc}); the file is corrupt or truncated"
        ) from None
    return config, as_tensor_dict(state_dict, budget)


def load_npz(path: Path, budget: LoadBudget):
    config_path = _config_beside(path)
    config = normalise_config(_read_json_config(config_path), config_path.name)
    try:
        state_dict = _read_npz(path, budget)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"could not read {path.name} as a NumPy .npz of weights ({exc})") from None
    return config, state_dict


def _read_npz(path: Path, budget: LoadBudget) -> dict[str, torch.Tensor]:
    """Each ``.npy`` member, its header checked against its stored size before reading."""
    from numpy.lib import format as npy

    state_dict = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                version = npy.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise ModelError(f"{path.name}: member {name} has npy version {version}")
                read_header = (
                    npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(member)
                if dtype.kind not in "biuf" or dtype.hasobject:
                    raise ModelError(f"{path.name}: member {name} is not a numeric array")
                nbytes = element_count(shape) * dtype.itemsize
                budget.check_stored(nbytes, info.file_size, f"array {name} of shape {list(shape)}")
                budget.charge(nbytes + element_count(shape) * 4, f"array {name}")
                data = member.read(nbytes)
                if len(data) != nbytes:
                    raise ModelError(f"{path.name}: member {name} is truncated")
            array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            state_dict[name] = torch.from_numpy(np.array(array, dtype=np.float32))
    return state_dict


def _read_json_config(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ModelError(
                f"the generator config {path} is over {MAX_JSON_BYTES // 2**20} MiB; "
                "not a StyleGAN2 config"
            )
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"could not read the generator config {path}: {exc}") from None


def _config_beside(path: Path) -> Path:
    candidates = [path.with_suffix(".json")]
    if path.suffix == ".npz":
        candidates.append(path.parent / "config.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    expected = " or ".join(str(candidate) for candidate in candidates)
    raise ModelError(f"{path.name} needs its generator config beside it: expected {expected}")


def as_tensor_dict(mapping, budget: LoadBudget) -> dict[str, torch.Tensor]:
    if not isinstance(mapping, dict) or not all(
        isinstance(v, torch.Tensor) for v in mapping.values()
    ):
        raise ModelError(f"{budget.source} is not a dict of tensors (a generator state_dict)")
    if len(mapping) > MAX_ENTRIES:
        raise ModelError(f"{budget.source} holds more than {MAX_ENTRIES} tensors")
    return {str(name): converted(tensor, str(name), budget) for name, tensor in mapping.items()}
