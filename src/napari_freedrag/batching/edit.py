"""What a Dask worker runs for one instruction: the engine's drag, returned as arrays.

Workers read no instruction files and write nothing: the client sends the input arrays
and writes the results, so a cluster needs no shared folder, only the models. Each worker
process keeps the backends it loaded (one per model and device) for every later edit.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from napari_freedrag.errors import FreeDragError, InputError

_backends: dict[tuple[str, str], Any] = {}


def backend_for(model: str, device: str) -> tuple[Any, bool]:
    """This process's backend for ``model`` on ``device``, and whether it was loaded now."""
    key = (model, device)
    if key in _backends:
        return _backends[key], False
    from napari_freedrag.models.registry import load_generator

    _backends[key] = load_generator(model, device=device)
    return _backends[key], True


def run_edit(task: dict[str, Any]) -> dict[str, Any]:
    """One edit; a user mistake or a failing edit comes back as ``{"status": "error"}``."""
    import torch

    torch.set_num_threads(1)  # one task thread per core: torch must not oversubscribe
    reply: dict[str, Any] = {"line": task["line"], "worker": _worker_name(), "model_loaded": False}
    try:
        reply.update(_edit(task))
    except FreeDragError as exc:
        reply.update(status="error", error=_first_line(exc))
    except Exception as exc:  # noqa: BLE001 - a failing edit is a row, the batch goes on
        reply.update(status="error", error=f"{type(exc).__name__}: {_first_line(exc)}")
    return reply


def _edit(task: dict[str, Any]) -> dict[str, Any]:
    from napari_freedrag.cli import _start_state
    from napari_freedrag.engine.run import drag

    options = task["options"]
    gen, loaded = backend_for(options.get("model", "cells"), task["device"])
    choice = SimpleNamespace(
        seed=options.get("seed"),
        image=options.get("image"),
        prompt=options.get("prompt", ""),
        lora_steps=options.get("lora_steps", 0),
        invert_mode=options.get("invert_mode"),
        invert_steps=options.get("invert_steps"),
    )  # the edit command's options, for its start-state helper
    start = _start_state(gen, choice, task.get("image"), task.get("latent"))
    pairs = task["pairs"]
    handles = np.array([h for h, _ in pairs], dtype=np.float64)
    targets = np.array([t for _, t in pairs], dtype=np.float64)
    params = {k: options[k] for k in ("l", "d") if k in options}
    result = drag(
        gen, start, handles, targets, mask=task.get("mask"),
        method=options.get("method", "freedrag"), max_steps=options.get("max_steps"), **params,
    )  # fmt: skip
    reply = {
        "status": "done",
        "model_loaded": loaded,
        "image": result.image,
        "report": dict(result.report),
        "latent": None,
    }
    if "save_latent" in options:
        reply["latent"] = result.state.latent.detach().cpu().numpy()
    if options.get("truth"):
        from napari_freedrag.batching.truth import measure_truth

        if start.image is None:
            raise InputError("truth needs a model that renders its start image (cells)")
        reply["truth"] = measure_truth(start.image, result.image, handles, targets)
    return reply


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
