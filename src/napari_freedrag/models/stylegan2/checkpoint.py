"""Read StyleGAN2 generator weights from the files users have, without running their code.

NVIDIA's ``.pkl`` files embed the Python source of the network and NVIDIA's own loader
executes it.  We never do: a restricted unpickler rebuilds tensors, dicts and plain
values only, replaces every persistent network object by an inert record of its
``state`` (the ``module_src`` string is dropped unread), and refuses any other global
with :class:`UnsafeCheckpointError`.  The weights are then read off the records.

Every format ends as ``(config, state_dict)``: ``config`` holds the generator constructor
arguments in one flat layout (synthesis options at the top level, mapping options under
``mapping_kwargs``), ``state_dict`` maps NVIDIA's dotted names to float32 tensors.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_freedrag.errors import ModelError, UnsafeCheckpointError

try:  # NumPy >= 1.26 / 2.x name; files written with NumPy 1 say numpy.core
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - old NumPy
    from numpy.core import multiarray as _np_multiarray

#: File suffixes :func:`load_checkpoint` reads.
CHECKPOINT_SUFFIXES = (".pkl", ".pt", ".pth", ".safetensors", ".npz")

#: Format tag written into the JSON beside our own ``.safetensors`` files.
JSON_FORMAT = "napari-freedrag/stylegan2"

_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_SYNTHESIS_DEFAULTS = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_fp16_res": 0,
    "conv_clamp": None,
}
_MAPPING_DEFAULTS = {"num_layers": 8}
#: Options that only change speed on NVIDIA's CUDA kernels, not the result.
_SPEED_ONLY_OPTIONS = ("fused_modconv_default", "fp16_channels_last")
#: Derived facts some JSON files carry next to the constructor arguments.
_DERIVED_FACTS = ("num_ws", "block_resolutions", "block_channels", "class_name")
#: Constructor options that exist only in the alias-free (StyleGAN3) generator.
_STYLEGAN3_OPTIONS = (
    "magnitude_ema_beta",
    "conv_kernel",
    "use_radial_filters",
    "first_cutoff",
    "first_stopband",
    "margin_size",
    "output_scale",
    "num_critical",
)
_STYLEGAN3_LAYER = re.compile(r"^L\d+_\d+_\d+$")
_STYLEGAN3_MESSAGE = (
    "{name} is a StyleGAN3 (alias-free) network: StyleGAN3 networks are not supported yet; "
    "use a StyleGAN2 checkpoint (e.g. stylegan2-ffhq-512x512.pkl)"
)


# --------------------------------------------------------------------------------------
# The restricted unpickler


class PersistentRecord:
    """What an NVIDIA persistent network object unpickles to here: its class name and state.

    The original object would be rebuilt by executing ``module_src``; this record keeps
    only the ``state`` dict (parameters, buffers, children, constructor arguments).
    """

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


class _TFNetwork:
    """Stand-in for ``dnnlib.tflib.network.Network`` (TF-era files): keeps the pickled state
    (variables as NumPy arrays, kwargs, components); ``build_module_src`` is never run."""

    state: dict = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))


class _AttrDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict that tolerates a pickled state."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _reconstruct_persistent_obj(meta):
    if (
        not isinstance(meta, dict)
        or meta.get("type") != "class"
        or not isinstance(meta.get("state"), dict)
    ):
        raise ModelError("a persistent object in the file is not a pickled network class")
    return PersistentRecord(str(meta.get("class_name", "?")), meta["state"])


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """A view on a loaded storage; it must lie inside the stored data (torch would
    otherwise silently grow the storage with uninitialised memory)."""
    if not isinstance(storage, torch.TypedStorage):
        raise ModelError(
            f"a tensor in the file is built on a {type(storage).__name__}, not a storage"
        )
    offset, size, stride = int(storage_offset), tuple(map(int, size)), tuple(map(int, stride))
    if len(size) != len(stride) or min((offset, *size, *stride)) < 0:
        raise ModelError("a tensor in the file has a malformed shape")
    end = offset + sum((n - 1) * step for n, step in zip(size, stride, strict=True)) + 1
    if all(size) and end > storage.size():
        raise ModelError("a tensor in the file reaches past its stored data (corrupt file)")
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise ModelError("a parameter in the file holds no tensor")
    return data


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise ModelError("an array in the file is not a plain NumPy array")
    return _np_multiarray._reconstruct(np.ndarray, shape, dtype)


def _copyreg_reconstructor(cls, base, state):
    if cls not in (ForeignModule, _AttrDict, _TFNetwork) or base not in (object, dict):
        raise ModelError("the file rebuilds an object of an unexpected class")
    return cls()


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("dnnlib.util", "EasyDict"): _AttrDict,
    ("dnnlib", "EasyDict"): _AttrDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.tflib.network", "Network"): _TFNetwork,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _WeightsOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals NVIDIA's weight files need."""

    def __init__(self, file, source_name: str):
        super().__init__(file)
        self._source_name = source_name

    def find_class(self, module: str, name: str):
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_storage_bytes
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules.") and _is_torch_module_class(module, name):
            return ForeignModule
        raise UnsafeCheckpointError(
            f"refusing to load {self._source_name}: the file asks to run {module}.{name}; "
            "napari-freedrag only reads weights"
        )

    def persistent_load(self, pid):
        raise ModelError(
            f"{self._source_name} refers to external storage ({pid!r}); not a weight file"
        )

    def _load_storage_bytes(self, blob):
        """Tensor storages are nested legacy ``torch.save`` blobs: read them weights-only."""
        if not isinstance(blob, (bytes, bytearray)):
            raise ModelError(f"{self._source_name}: a tensor storage is not stored as bytes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"(?:GLOBAL|global:?)\s+([\w.]+)", str(exc))
            what = found.group(1) if found else "code"
            raise UnsafeCheckpointError(
                f"refusing to load {self._source_name}: a tensor inside the file asks to run "
                f"{what}; napari-freedrag only reads weights"
            ) from None
        if not isinstance(storage, torch.TypedStorage):
            raise ModelError(f"{self._source_name}: a tensor storage blob holds no typed storage")
        return storage


def _is_torch_module_class(module: str, name: str) -> bool:
    import importlib

    try:
        candidate = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(candidate, type) and issubclass(candidate, torch.nn.Module)


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return _WeightsOnlyUnpickler(file, path.name).load()
    except (UnsafeCheckpointError, ModelError):
        raise
    except RecursionError:
        raise ModelError(f"could not read {path.name}: the pickle is nested too deeply") from None
    except EOFError:
        raise ModelError(
            f"could not read {path.name}: the file is truncated (download it again)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt or foreign file
        raise ModelError(
            f"could not read {path.name} as a StyleGAN2 pickle ({type(exc).__name__}: {exc}); "
            "the file is corrupt, truncated or not a network pickle"
        ) from None


# --------------------------------------------------------------------------------------
# From unpickled records to (config, state_dict)


def _plain(value):
    """Deep copy of ``value`` with dict subclasses turned into plain dicts, tuples kept."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    return copy.deepcopy(value)


def _walk_module(record, prefix: str, out: dict[str, torch.Tensor], source: str) -> None:
    state = getattr(record, "state", {})
    if not isinstance(state, dict):
        raise ModelError(f"{source}: module {prefix.rstrip('.') or 'G_ema'} has no readable state")
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ModelError(
                    f"{source}: {prefix}{name} is a {type(tensor).__name__}, not a tensor"
                )
            out[prefix + name] = (
                tensor.detach().to(torch.float32) if tensor.is_floating_point() else tensor
            )
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, (PersistentRecord, ForeignModule)):
            raise ModelError(f"{source}: sub-module {prefix}{name} is a {type(child).__name__}")
        _walk_module(child, f"{prefix}{name}.", out, source)


def _is_stylegan3(state_dict_names, config: dict) -> bool:
    if any(key in config for key in _STYLEGAN3_OPTIONS):
        return True
    for name in state_dict_names:
        parts = name.split(".")
        if (
            len(parts) > 1
            and parts[0] == "synthesis"
            and (parts[1] == "input" or _STYLEGAN3_LAYER.match(parts[1]))
        ):
            return True
    return False


def _pick_generator(obj, source: str):
    if isinstance(obj, (PersistentRecord, _TFNetwork)):
        return obj
    if isinstance(obj, dict):
        if "G_ema" in obj:
            return obj["G_ema"]
        keys = ", ".join(sorted(map(str, obj))[:8]) or "nothing"
        raise ModelError(
            f"{source} holds no G_ema network (found {keys}); is it a StyleGAN2 training snapshot?"
        )
    if isinstance(obj, (list, tuple)):
        networks = [item for item in obj if isinstance(item, _TFNetwork)]
        if networks:  # TF-era files hold (G, D, Gs): Gs is the moving average to use
            named = [net for net in networks if net.name == "Gs"]
            return named[0] if named else networks[-1]
    raise ModelError(f"{source} holds a {type(obj).__name__}, not a StyleGAN2 network pickle")


def _records_to_checkpoint(obj, source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    generator = _pick_generator(obj, source)
    if isinstance(generator, _TFNetwork):
        return _convert_tf_generator(generator, source)
    if not isinstance(generator, PersistentRecord):
        raise ModelError(
            f"{source}: G_ema is a {type(generator).__name__}, not a pickled NVIDIA network"
        )
    state = generator.state
    init_kwargs = state.get("_init_kwargs", state.get("init_kwargs"))
    init_args = state.get("_init_args", state.get("init_args")) or ()
    if not isinstance(init_kwargs, dict) or len(init_args) > len(_GENERATOR_ARGS):
        raise ModelError(f"{source}: G_ema has no readable constructor arguments (init_kwargs)")
    raw = dict(zip(_GENERATOR_ARGS, init_args, strict=False))
    raw.update(init_kwargs)
    state_dict: dict[str, torch.Tensor] = {}
    _walk_module(generator, "", state_dict, source)
    if _is_stylegan3(state_dict, _plain(raw)):
        raise ModelError(_STYLEGAN3_MESSAGE.format(name=source))
    if generator.class_name != "Generator":
        raise ModelError(f"{source}: G_ema is a {generator.class_name}, not a StyleGAN2 Generator")
    return normalise_config(raw, source), state_dict


# --------------------------------------------------------------------------------------
# TensorFlow-era (dnnlib.tflib) generators: TF variable names -> NVIDIA PyTorch names

#: TF static kwargs -> (our config key, default), as NVIDIA's own conversion reads them.
_TF_KWARGS = {
    "latent_size": ("z_dim", 512),
    "label_size": ("c_dim", 0),
    "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024),
    "num_channels": ("img_channels", 3),
}
#: TF options our generator implements only at these values.
_TF_FIXED = {
    "architecture": "skip",
    "nonlinearity": "lrelu",
    "mapping_nonlinearity": "lrelu",
    "resample_kernel": [1, 3, 3, 1],
    "mapping_lrmul": 0.01,
    "use_noise": True,
    "mapping_fmaps": None,
    "fmap_decay": 1.0,
}


def _tf_variables(network: _TFNetwork, source: str) -> dict[str, np.ndarray]:
    """Every variable of a TF network and its components under ``component/name`` keys."""
    found: dict[str, np.ndarray] = {}

    def visit(prefix: str, net) -> None:
        if not isinstance(net, _TFNetwork):
            raise ModelError(f"{source}: a TF network component is a {type(net).__name__}")
        for entry in net.state.get("variables") or ():
            name, value = entry
            if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.kind != "f":
                raise ModelError(f"{source}: TF variable {prefix}{name} is not a float array")
            found[prefix + str(name)] = np.asarray(value, dtype=np.float32)
        for name, component in (net.state.get("components") or {}).items():
            visit(f"{prefix}{name}/", component)

    visit("", network)
    return found


def _convert_tf_generator(network: _TFNetwork, source: str):
    version = network.state.get("version", 0)
    if not isinstance(version, int) or version < 4:
        raise ModelError(
            f"{source}: TensorFlow network pickle version {version!r} is too old "
            "(StyleGAN1 or pre-release); only StyleGAN2 config-f files are read"
        )
    kwargs = _plain(network.state.get("static_kwargs") or {})
    if kwargs.get("mapping_fmaps") in (None, kwargs.get("dlatent_size", 512)):
        kwargs.pop("mapping_fmaps", None)
    for key, allowed in _TF_FIXED.items():
        value = kwargs.get(key, allowed)
        if (list(value) if isinstance(value, tuple) else value) != allowed:
            raise ModelError(
                f"{source}: TF-era generator with {key}={value!r} is not supported "
                f"(only {allowed!r})"
            )
    if kwargs.get("label_size", 0):
        raise ModelError(f"{source}: conditional TF-era generators are not supported")
    raw = {ours: kwargs.get(theirs, default) for theirs, (ours, default) in _TF_KWARGS.items()}
    raw["mapping_kwargs"] = {"num_layers": kwargs.get("mapping_layers", 8)}
    raw["channel_base"] = int(kwargs.get("fmap_base", 16384)) * 2  # TF counts per half resolution
    raw["channel_max"] = kwargs.get("fmap_max", 512)
    config = normalise_config(raw, source)
    variables = _tf_variables(network, source)
    if any(name.startswith("synthesis/ToRGB_lod") for name in variables):
        raise ModelError(f"{source}: TF-era generator with architecture='orig' is not supported")

    def take(name: str) -> np.ndarray:
        if name not in variables:
            raise ModelError(f"{source}: TF-era generator lacks variable {name}")
        return variables[name]

    def affine(prefix: str, tf_layer: str) -> None:
        state[prefix + "affine.weight"] = take(tf_layer + "/mod_weight").T
        state[prefix + "affine.bias"] = take(tf_layer + "/mod_bias") + 1  # TF adds the 1 later

    taps = np.array([1, 3, 3, 1], dtype=np.float64)
    resample_filter = (np.outer(taps, taps) / np.outer(taps, taps).sum()).astype(np.float32)
    state: dict[str, np.ndarray] = {"mapping.w_avg": take("dlatent_avg")}
    for index in range(config["mapping_kwargs"]["num_layers"]):
        state[f"mapping.fc{index}.weight"] = take(f"mapping/Dense{index}/weight").T
        state[f"mapping.fc{index}.bias"] = take(f"mapping/Dense{index}/bias")
    resolution, noise_index = 4, 0
    while resolution <= config["img_resolution"]:
        tf_block, block = f"synthesis/{resolution}x{resolution}/", f"synthesis.b{resolution}."
        state[block + "resample_filter"] = resample_filter
        layers = (
            [("conv1", "Conv")] if resolution == 4 else [("conv0", "Conv0_up"), ("conv1", "Conv1")]
        )
        if resolution == 4:
            state[block + "const"] = take(tf_block + "Const/const")[0]
        for ours, theirs in layers:
            weight = take(tf_block + theirs + "/weight")
            if theirs == "Conv0_up":  # TF upsamples with a transposed conv: flip the kernel
                weight = weight[::-1, ::-1]
            prefix = f"{block}{ours}."
            state[prefix + "weight"] = weight.transpose(3, 2, 0, 1)
            state[prefix + "bias"] = take(tf_block + theirs + "/bias")
            state[prefix + "noise_strength"] = take(tf_block + theirs + "/noise_strength")
            state[prefix + "noise_const"] = take(f"synthesis/noise{noise_index}")[0, 0]
            state[prefix + "resample_filter"] = resample_filter
            affine(prefix, tf_block + theirs)
            noise_index += 1
        state[block + "torgb.weight"] = take(tf_block + "ToRGB/weight").transpose(3, 2, 0, 1)
        state[block + "torgb.bias"] = take(tf_block + "ToRGB/bias")
        affine(block + "torgb.", tf_block + "ToRGB")
        resolution *= 2
    return config, {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in state.items()}


# --------------------------------------------------------------------------------------
# Config layouts


def normalise_config(raw: dict, source: str = "the checkpoint") -> dict:
    """Constructor kwargs in the one layout :class:`Generator` takes, from any file layout.

    Accepts stylegan2-ada-pytorch (nested ``synthesis_kwargs``), stylegan3-repository
    (flat, with ``fused_modconv_default``), our own JSON (``{"format", "config"}``) and the
    fixtures' JSON (``{"init_kwargs": ...}`` plus derived facts).
    """
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise ModelError(
            f"{source}: the generator config is a {type(raw).__name__}, not a JSON object"
        )
    if isinstance(raw.get("config"), dict):
        raw = raw["config"]
    elif isinstance(raw.get("init_kwargs"), dict):
        raw = raw["init_kwargs"]
    if any(key in raw for key in _STYLEGAN3_OPTIONS):
        raise ModelError(_STYLEGAN3_MESSAGE.format(name=source))
    missing = [key for key in _GENERATOR_ARGS if key not in raw and key != "c_dim"]
    if missing:
        raise ModelError(f"{source}: the generator config lacks {', '.join(missing)}")
    config: dict[str, Any] = {}
    for key in _GENERATOR_ARGS:
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelError(
                f"{source}: generator config {key} must be a non-negative integer, not {value!r}"
            )
        config[key] = value
    resolution = config["img_resolution"]
    if resolution < 4 or resolution & (resolution - 1):
        raise ModelError(f"{source}: img_resolution must be a power of two >= 4, not {resolution}")
    mapping = raw.get("mapping_kwargs") or {}
    if not isinstance(mapping, dict):
        raise ModelError(f"{source}: mapping_kwargs must be a JSON object")
    config["mapping_kwargs"] = {**_MAPPING_DEFAULTS, **mapping}
    synthesis = dict(raw.get("synthesis_kwargs") or {})
    for key, value in raw.items():
        if key not in (*_GENERATOR_ARGS, "mapping_kwargs", "synthesis_kwargs", *_DERIVED_FACTS):
            synthesis.setdefault(key, value)
    for key in _SPEED_ONLY_OPTIONS:
        synthesis.pop(key, None)
    config.update({**_SYNTHESIS_DEFAULTS, **synthesis})
    return config


def _read_json_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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


def _check_names(state_dict: dict, source: str) -> None:
    needed = ("mapping.fc0.weight", "synthesis.b4.const")
    if not all(name in state_dict for name in needed):
        _stylegan3_names = _is_stylegan3(state_dict, {})
        if _stylegan3_names:
            raise ModelError(_STYLEGAN3_MESSAGE.format(name=source))
        sample = ", ".join(list(state_dict)[:3]) or "no tensors"
        raise ModelError(
            f"{source} does not hold StyleGAN2 generator weights: expected names like "
            f"{', '.join(needed)}; found {sample}"
        )


def _as_tensor_dict(mapping, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(mapping, dict) or not all(
        isinstance(v, torch.Tensor) for v in mapping.values()
    ):
        raise ModelError(f"{source} is not a dict of tensors (a generator state_dict)")
    return {
        str(name): tensor.to(torch.float32) if tensor.is_floating_point() else tensor
        for name, tensor in mapping.items()
    }


# --------------------------------------------------------------------------------------
# Public API


def load_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, state_dict)`` from a ``.pkl``, ``.pt``, ``.safetensors`` or ``.npz`` file.

    Never executes code stored in the file; raises :class:`ModelError` (or
    :class:`UnsafeCheckpointError`) with a message a user can act on.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".pkl" and not zipfile.is_zipfile(path):
        records = _unpickle(path)
        try:
            config, state_dict = _records_to_checkpoint(records, path.name)
        except (AttributeError, TypeError, ValueError, KeyError, RecursionError) as exc:
            raise ModelError(
                f"{path.name}: unknown network layout inside the pickle ({type(exc).__name__}: "
                f"{exc}); napari-freedrag reads NVIDIA StyleGAN2 pickles"
            ) from None
    elif suffix in (".pkl", ".pt", ".pth"):
        config, state_dict = _load_torch_file(path)
    elif suffix == ".safetensors":
        config, state_dict = _load_safetensors(path)
    elif suffix == ".npz":
        config, state_dict = _load_npz(path)
    else:
        raise ModelError(
            f"{path.name}: unknown checkpoint format; use one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    _check_names(state_dict, path.name)
    return config, state_dict


def _load_torch_file(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:GLOBAL|global:?)\s+([\w.]+)", str(exc))
        what = found.group(1) if found else "code"
        raise UnsafeCheckpointError(
            f"refusing to load {path.name}: the file asks to run {what}; "
            "napari-freedrag only reads weights (save a plain state_dict instead)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt archive, wrong format
        raise ModelError(
            f"could not read {path.name} with torch.load ({type(exc).__name__}: {exc})"
        ) from None
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("state_dict"), dict)
        and isinstance(obj.get("config"), dict)
    ):
        return normalise_config(obj["config"], path.name), _as_tensor_dict(
            obj["state_dict"], path.name
        )
    state_dict = _as_tensor_dict(obj, path.name)
    return normalise_config(_read_json_config(_config_beside(path)), path.name), state_dict


def _load_safetensors(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = _config_beside(path)
    try:
        state_dict = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"could not read {path.name} as safetensors ({exc}); the file is corrupt or truncated"
        ) from None
    return normalise_config(_read_json_config(config_path), config_path.name), _as_tensor_dict(
        state_dict, path.name
    )


def _load_npz(path: Path):
    config_path = _config_beside(path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            state_dict = {
                name: torch.from_numpy(np.array(arrays[name], dtype=np.float32))
                for name in arrays.files
            }
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(f"could not read {path.name} as a NumPy .npz of weights ({exc})") from None
    return normalise_config(_read_json_config(config_path), config_path.name), state_dict


def save_checkpoint(
    path, config: dict, state_dict: dict[str, torch.Tensor], info: dict | None = None
) -> Path:
    """Write ``X.safetensors`` + ``X.json`` (config and optional provenance ``info``).

    Returns the ``.safetensors`` path; :func:`load_checkpoint` reads it back.
    """
    from safetensors.torch import save_file

    path = Path(path).expanduser().with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = normalise_config(config, path.name)
    tensors = {
        name: tensor.detach().to("cpu", torch.float32).contiguous()
        for name, tensor in state_dict.items()
    }
    save_file(tensors, str(path))
    document = {"format": JSON_FORMAT, "config": config}
    if info:
        document["info"] = _plain(info)
    path.with_suffix(".json").write_text(json.dumps(document, indent=1))
    return path


def build_generator(config: dict, state_dict: dict[str, torch.Tensor]):
    """An eval-mode :class:`network.Generator` holding exactly these weights."""
    from napari_freedrag.models.stylegan2.network import Generator

    try:
        generator = Generator(**config)
    except TypeError as exc:
        raise ModelError(
            f"this checkpoint uses generator options napari-freedrag does not implement ({exc})"
        ) from None
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        expected = generator.state_dict()
        missing = [name for name in expected if name not in state_dict]
        unexpected = [name for name in state_dict if name not in expected]
        reshaped = [
            name
            for name in expected
            if name in state_dict and tuple(expected[name].shape) != tuple(state_dict[name].shape)
        ]
        details = [
            f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", reshaped),
            )
            if names
        ]
        raise ModelError(
            "the checkpoint weights do not fit its generator config: "
            + ("; ".join(details) or str(exc).splitlines()[0])
        ) from None
    return generator.eval().requires_grad_(False)


def network_record(path, key: str) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """``(state_dict, init_kwargs)`` of another network in a snapshot pickle (e.g. ``"D"``).

    ``(None, {})`` when the file holds no such network; no code in the file runs.
    """
    path = Path(path).expanduser()
    records = _unpickle(path)
    record = records.get(key) if isinstance(records, dict) else None
    if not isinstance(record, PersistentRecord):
        return None, {}
    kwargs = record.state.get("_init_kwargs", record.state.get("init_kwargs"))
    if not isinstance(kwargs, dict):
        raise ModelError(f"{path.name}: {key} has no readable constructor arguments")
    state_dict: dict[str, torch.Tensor] = {}
    _walk_module(record, "", state_dict, path.name)
    return state_dict, _plain(kwargs)
