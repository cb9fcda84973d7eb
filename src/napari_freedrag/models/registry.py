"""MODEL strings -> backends: the bundled ``cells`` model, checkpoint files, known
categories looked up in the checkpoint folder, and ``ldm:`` diffusion models.

Nothing is ever downloaded: a missing category says which file to fetch, from where,
and which folder to put it in.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_freedrag.config import checkpoint_dir, resolve_device
from napari_freedrag.errors import ModelError
from napari_freedrag.models.stylegan2.categories import (
    BY_NAME,
    BY_STEM,
    CATEGORIES,
    Category,
    freedrag_patch_steps,
)
from napari_freedrag.models.stylegan2.checkpoint import CHECKPOINT_SUFFIXES

#: ``checkpoint_dir`` and ``resolve_device`` live in :mod:`napari_freedrag.config`; they are
#: part of the registry's public face too.
__all__ = ["checkpoint_dir", "format_models_table", "known_models", "load_generator",
           "resolve_device"]  # fmt: skip

#: How many loaded generators stay in memory (they can be hundreds of MB each).
_CACHE_SIZE = 2


@dataclass(frozen=True)
class ModelEntry:
    """A model the registry knows by name, and whether its file is on this machine."""

    name: str
    kind: str
    resolution: int | None
    filename: str
    path_found: Path | None
    where_to_get: str
    l: float  # noqa: E741 - the paper's name for the FreeDrag template threshold
    d: float
    description: str = ""


_cache: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
_cache_lock = threading.Lock()


def _bundled_path() -> Path:
    from napari_freedrag.models.cells import bundled_weights_path

    return bundled_weights_path()


def _bundled_resolution(path: Path) -> int | None:
    try:
        document = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    config = document.get("config", document) if isinstance(document, dict) else {}
    resolution = config.get("img_resolution") if isinstance(config, dict) else None
    return resolution if isinstance(resolution, int) else None


def _find_category_file(category: Category) -> Path | None:
    """The category's file in :func:`checkpoint_dir`; a converted ``.safetensors`` of the
    same stem (with its ``.json``) counts too and is preferred, being faster to read."""
    folder = checkpoint_dir()
    for filename in category.filenames:
        for candidate in (folder / Path(filename).with_suffix(".safetensors"), folder / filename):
            if candidate.is_file():
                return candidate
    return None


def known_models() -> list[ModelEntry]:
    """Every model known by name, with where it was found (or ``None``) on this machine."""
    bundled = _bundled_path()
    entries = [
        ModelEntry(
            "cells", "stylegan2", _bundled_resolution(bundled), bundled.name,
            bundled if bundled.is_file() else None, "bundled with napari-freedrag",
            *freedrag_patch_steps(None),
            "fluorescence-microscopy cells (trained by this project)",
        )
    ]  # fmt: skip
    for category in CATEGORIES:
        l, d = freedrag_patch_steps(category.name)  # noqa: E741
        entries.append(
            ModelEntry(
                category.name, "stylegan2", category.resolution, category.filenames[0],
                _find_category_file(category), category.url, l, d, category.description,
            )
        )  # fmt: skip
    return entries


def format_models_table() -> str:
    """The ``napari-freedrag models`` listing: each model, found or where to get it."""
    rows = [("NAME", "RES", "l/d", "STATUS")]
    for entry in known_models():
        if entry.path_found:
            status = f"found: {entry.path_found}"
        elif entry.name == "cells":
            status = "missing: the bundled weights are not installed; reinstall napari-freedrag"
        else:
            status = f"missing: get {entry.filename} from {entry.where_to_get}"
        resolution = str(entry.resolution) if entry.resolution else "?"
        rows.append((entry.name, resolution, f"{entry.l:g}/{entry.d:g}", status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  "
             + row[3] for row in rows]  # fmt: skip
    lines += [
        "",
        f"Checkpoint folder: {checkpoint_dir()} (set NAPARI_FREEDRAG_HOME to move it).",
        "Also accepted: a checkpoint path (" + ", ".join(CHECKPOINT_SUFFIXES) + ") or "
        "ldm:PATH_OR_ID for a local Stable Diffusion 1.x diffusers model.",
        "Nothing is downloaded automatically; see docs/checkpoints.md.",
    ]
    return "\n".join(lines)


def _accepted() -> str:
    names = ", ".join(["cells", *(c.name for c in CATEGORIES)])
    return (
        f"use one of: {names}; a checkpoint path ({', '.join(CHECKPOINT_SUFFIXES)}); "
        "or ldm:PATH_OR_ID"
    )


def _cached_generator(path: Path, device: torch.device) -> torch.nn.Module:
    """Load (or reuse) the generator for ``path`` on ``device``; a changed file reloads."""
    from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(device))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        generator = build_generator(*load_checkpoint(path)).to(device)
        _cache[key] = generator
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return generator


def _stylegan2_backend(path: Path, device: torch.device, name: str, category: str | None):
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend

    generator = _cached_generator(path, device)
    return StyleGAN2Backend(generator, name, device, category=category, checkpoint=path)


def load_generator(model: str | os.PathLike = "cells", device: str | torch.device = "auto"):
    """The :class:`~napari_freedrag.engine.protocol.Backend` for a MODEL string.

    ``cells`` (bundled), a checkpoint path, a known category name (looked up in
    :func:`checkpoint_dir`), or ``ldm:PATH_OR_ID``.  Loaded generators are cached per
    (file, device), so loading the same model again is instant.
    """
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise ModelError(f"no model given: {_accepted()}")
    text = model.strip()
    if text.lower().startswith("ldm:"):
        from napari_freedrag.models.ldm import load_ldm

        return load_ldm(text[4:], resolve_device(device))
    resolved = resolve_device(device)
    if text.lower() == "cells":
        path = _bundled_path()
        if not path.is_file():
            raise ModelError(
                f"bundled model missing: {path} is not installed; reinstall napari-freedrag "
                "or pass a checkpoint path"
            )
        return _stylegan2_backend(path, resolved, "cells", None)
    category = BY_NAME.get(text.lower())
    if category is not None:
        path = _find_category_file(category)
        if path is None:
            raise ModelError(
                f"no '{category.name}' checkpoint in {checkpoint_dir()}: download "
                f"{category.filenames[0]} from {category.url} into that folder "
                "(or set NAPARI_FREEDRAG_HOME)"
            )
        return _stylegan2_backend(path, resolved, path.name, category.name)
    path = Path(text).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES or path.is_file():
        if not path.is_file():
            raise ModelError(f"checkpoint file not found: {path}")
        known = BY_STEM.get(path.stem.lower())
        return _stylegan2_backend(path, resolved, path.name, known.name if known else None)
    if path.is_dir():
        raise ModelError(f"{path} is a folder: for a diffusers model use ldm:{path}")
    raise ModelError(f"unknown model {text!r}: {_accepted()}")
