"""Read StyleGAN2 generator weights from the files users have, without running their code.

Every format ends as ``(config, state_dict)``: ``config`` holds the generator constructor
arguments in one flat layout (synthesis options at the top level, mapping options under
``mapping_kwargs``, see :mod:`.config`), ``state_dict`` maps NVIDIA's dotted names to
float32 tensors. Pickles of any kind go through the restricted reader in :mod:`.unpickler`;
every byte a file makes the loader build is charged to a :class:`~.budget.LoadBudget`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from napari_freedrag.errors import ModelError, UnsafeCheckpointError
from napari_freedrag.models.stylegan2.budget import LoadBudget
from napari_freedrag.models.stylegan2.config import (
    GENERATOR_ARGS,
    STYLEGAN3_MESSAGE,
    is_stylegan3,
    normalise_config,
    plain_config,
)
from napari_freedrag.models.stylegan2.tensor_files import (
    MAX_ENTRIES,
    converted,
    load_npz,
    load_safetensors,
    load_torch_object,
)
from napari_freedrag.models.stylegan2.tf_era import convert_tf_generator
from napari_freedrag.models.stylegan2.unpickler import (
    ForeignModule,
    PersistentRecord,
    TensorReader,
    TFNetwork,
    read_torch_file,
    unpickle,
)

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "build_generator",
    "load_checkpoint",
    "normalise_config",
    "save_checkpoint",
]

#: File suffixes :func:`load_checkpoint` reads.
CHECKPOINT_SUFFIXES = (".pkl", ".pt", ".pth", ".safetensors", ".npz")
#: Format tag written into the JSON beside our own ``.safetensors`` files.
JSON_FORMAT = "napari-freedrag/stylegan2"


# --------------------------------------------------------------------------------------
# Public API


def load_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, state_dict)`` from a ``.pkl``, ``.pt``, ``.safetensors`` or ``.npz`` file.

    Never executes code stored in the file and never builds more than the loading budget
    (:mod:`.budget`); raises :class:`ModelError` (or :class:`UnsafeCheckpointError`) with a
    message a user can act on.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(
            f"{path.name}: unknown checkpoint format; use one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    budget = LoadBudget(path.name, path.stat().st_size)
    try:
        if suffix == ".pkl" and not zipfile.is_zipfile(path):
            config, state_dict = _records_to_checkpoint(_read(unpickle, path, budget), budget)
        elif suffix in (".pkl", ".pt", ".pth"):
            obj = _read(read_torch_file, path, budget)
            config, state_dict = load_torch_object(obj, path, budget)
        elif suffix == ".safetensors":
            config, state_dict = load_safetensors(path, budget)
        else:
            config, state_dict = load_npz(path, budget)
    except (UnsafeCheckpointError, ModelError):
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise ModelError(
            f"{path.name}: unknown network layout inside the file ({type(exc).__name__}: "
            f"{exc}); napari-freedrag reads NVIDIA StyleGAN2 generators"
        ) from None
    except RecursionError:
        raise ModelError(f"{path.name}: the file is nested too deeply to be a network") from None
    _check_names(state_dict, path.name)
    _check_finite(state_dict, path.name)
    return config, state_dict


def save_checkpoint(
    path, config: dict, state_dict: dict[str, torch.Tensor], info: dict | None = None
) -> Path:
    """Write ``X.safetensors`` + ``X.json`` (config and optional provenance ``info``).

    Returns the ``.safetensors`` path; :func:`load_checkpoint` reads it back. Both files
    are written whole or not at all.
    """
    from safetensors.torch import save as save_bytes

    from napari_freedrag.io import atomic_write_bytes, jsonable

    path = Path(path).expanduser().with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = normalise_config(config, path.name)
    tensors = {
        name: tensor.detach().to("cpu", torch.float32).contiguous()
        for name, tensor in state_dict.items()
    }
    document = {"format": JSON_FORMAT, "config": config}
    if info:
        document["info"] = jsonable(info)
    atomic_write_bytes(path, save_bytes(tensors))
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(document, indent=1).encode())
    return path


def build_generator(config: dict, state_dict: dict[str, torch.Tensor]):
    """An eval-mode :class:`network.Generator` holding exactly these weights.

    The network is laid out on the ``meta`` device first, so a config that does not fit
    the weights is refused before any memory is allocated for it.
    """
    from napari_freedrag.models.stylegan2.network import Generator

    try:
        with torch.device("meta"):
            expected = Generator(**config).state_dict()
    except ModelError:
        raise
    except (TypeError, ValueError, RuntimeError, AttributeError, KeyError, IndexError) as exc:
        raise ModelError(
            f"this checkpoint uses generator options napari-freedrag does not implement ({exc})"
        ) from None
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
    if details:
        raise ModelError(
            "the checkpoint weights do not fit its generator config: " + "; ".join(details)
        )
    generator = Generator(**config)
    generator.load_state_dict(state_dict, strict=True)
    return generator.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------
# Pickles: from unpickled records to (config, state_dict)


def _read(read, path: Path, budget: LoadBudget):
    """Run one of the unpickler's readers, turning decoding failures into one message."""
    try:
        return read(path, TensorReader(budget))
    except ModelError as exc:
        if path.name in str(exc):
            raise
        raise type(exc)(f"{path.name}: {exc}") from None
    except RecursionError:
        raise ModelError(f"could not read {path.name}: the pickle is nested too deeply") from None
    except EOFError:
        raise ModelError(
            f"could not read {path.name}: the file is truncated (download it again)"
        ) from None
    except MemoryError:
        raise ModelError(
            f"could not read {path.name}: it asks for more memory than exists"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt or foreign file
        raise ModelError(
            f"could not read {path.name} as a weight pickle ({type(exc).__name__}: {exc}); "
            "the file is corrupt, truncated or not a network pickle"
        ) from None


def _walk_module(record, prefix: str, out: dict, budget: LoadBudget, visited: list) -> None:
    source = budget.source
    visited[0] += 1
    if visited[0] > MAX_ENTRIES:
        raise ModelError(f"{source}: more than {MAX_ENTRIES} sub-modules; not a generator")
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
            out[prefix + name] = converted(tensor, prefix + name, budget)
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord | ForeignModule):
            raise ModelError(f"{source}: sub-module {prefix}{name} is a {type(child).__name__}")
        _walk_module(child, f"{prefix}{name}.", out, budget, visited)


def _pick_generator(obj, source: str):
    if isinstance(obj, PersistentRecord | TFNetwork):
        return obj
    if isinstance(obj, dict):
        if "G_ema" in obj:
            return obj["G_ema"]
        keys = ", ".join(sorted(map(str, obj))[:8]) or "nothing"
        raise ModelError(
            f"{source} holds no G_ema network (found {keys}); is it a StyleGAN2 training snapshot?"
        )
    if isinstance(obj, list | tuple):
        networks = [item for item in obj if isinstance(item, TFNetwork)]
        if networks:  # TF-era files hold (G, D, Gs): Gs is the moving average to use
            named = [net for net in networks if net.name == "Gs"]
            return named[0] if named else networks[-1]
    raise ModelError(f"{source} holds a {type(obj).__name__}, not a StyleGAN2 network pickle")


def _records_to_checkpoint(obj, budget: LoadBudget) -> tuple[dict, dict[str, torch.Tensor]]:
    source = budget.source
    generator = _pick_generator(obj, source)
    if isinstance(generator, TFNetwork):
        return convert_tf_generator(generator, budget)
    if not isinstance(generator, PersistentRecord):
        raise ModelError(
            f"{source}: G_ema is a {type(generator).__name__}, not a pickled NVIDIA network"
        )
    state = generator.state
    init_kwargs = state.get("_init_kwargs", state.get("init_kwargs"))
    init_args = state.get("_init_args", state.get("init_args")) or ()
    if (
        not isinstance(init_kwargs, dict)
        or not isinstance(init_args, list | tuple)
        or len(init_args) > len(GENERATOR_ARGS)
    ):
        raise ModelError(f"{source}: G_ema has no readable constructor arguments (init_kwargs)")
    raw = dict(zip(GENERATOR_ARGS, init_args, strict=False))
    raw.update(init_kwargs)
    raw = plain_config(raw, source)
    state_dict: dict[str, torch.Tensor] = {}
    _walk_module(generator, "", state_dict, budget, [0])
    if is_stylegan3(state_dict, raw):
        raise ModelError(STYLEGAN3_MESSAGE.format(name=source))
    if generator.class_name != "Generator":
        raise ModelError(f"{source}: G_ema is a {generator.class_name}, not a StyleGAN2 Generator")
    return normalise_config(raw, source), state_dict


def _check_names(state_dict: dict, source: str) -> None:
    needed = ("mapping.fc0.weight", "synthesis.b4.const")
    if not all(name in state_dict for name in needed):
        if is_stylegan3(state_dict, {}):
            raise ModelError(STYLEGAN3_MESSAGE.format(name=source))
        sample = ", ".join(list(state_dict)[:3]) or "no tensors"
        raise ModelError(
            f"{source} does not hold StyleGAN2 generator weights: expected names like "
            f"{', '.join(needed)}; found {sample}"
        )


def _check_finite(state_dict: dict, source: str) -> None:
    """NaN or inf weights make every image NaN: say so here, not as a latent problem later."""
    bad = [
        name
        for name, tensor in state_dict.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ModelError(
            f"{source}: the weights {', '.join(bad[:3])}{more} contain NaN or inf; "
            "the file is damaged (download it again)"
        )


def network_record(path, key: str) -> tuple[dict[str, torch.Tensor] | None, dict]:
    """``(state_dict, init_kwargs)`` of another network in a snapshot pickle (e.g. ``"D"``).

    ``(None, {})`` when the file holds no such network; no code in the file runs and the
    same loading budget applies.
    """
    path = Path(path).expanduser()
    budget = LoadBudget(path.name, path.stat().st_size)
    records = _read(unpickle, path, budget)
    record = records.get(key) if isinstance(records, dict) else None
    if not isinstance(record, PersistentRecord):
        return None, {}
    kwargs = record.state.get("_init_kwargs", record.state.get("init_kwargs"))
    if not isinstance(kwargs, dict):
        raise ModelError(f"{path.name}: {key} has no readable constructor arguments")
    state_dict: dict[str, torch.Tensor] = {}
    _walk_module(record, "", state_dict, budget, [0])
    _check_finite(state_dict, path.name)
    return state_dict, plain_config(kwargs, path.name)
