"""Where things live and what runs them: the checkpoint folder, devices, environment variables.

A leaf module (it imports nothing from the package but its errors), so the registry and every
backend can read the configuration without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from napari_freedrag.errors import InputError

#: Names the folder category checkpoints (and per-image LoRAs) are looked for in.
HOME_ENV = "NAPARI_FREEDRAG_HOME"
#: A fixed loading budget (MiB) for weight files; unset: 512 MiB plus twice the file's size.
LOAD_BUDGET_ENV = "NAPARI_FREEDRAG_LOAD_BUDGET_MB"


def checkpoint_dir() -> Path:
    """Where category checkpoints are looked for: ``$NAPARI_FREEDRAG_HOME`` when set,
    else ``~/.cache/napari-freedrag/checkpoints``."""
    folder = os.environ.get(HOME_ENV)
    if folder:
        return Path(folder).expanduser()
    return Path.home() / ".cache" / "napari-freedrag" / "checkpoints"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must exist here."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"device must be a string such as 'auto', 'cpu' or 'cuda', not {device!r}")
    name = device.strip().lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} requested but no CUDA GPU is available: use cpu or auto"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise InputError(
                f"device {device!r} does not exist: this machine has {count} CUDA GPU(s)"
            )
        return resolved
    if resolved.type == "mps":
        if not mps_ok:
            raise InputError(f"device {device!r} requested but Apple MPS is not available: use cpu")
        return resolved
    raise InputError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")
