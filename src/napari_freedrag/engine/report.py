"""The plain-JSON report of a drag, and how an edit names its parent.

An edit's state carries its own id (a digest of what it did and of its parent's id) and a
short reference to its parent, never the parent's whole history: a chain of any length
keeps every report the same size.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from .. import __version__

#: Provenance keys a parent reference keeps (short, plain values).
_SUMMARY_KEYS = ("edit", "model", "kind", "seed", "truncation", "source", "method", "steps")


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """A short reference to a state: its plain provenance fields and its parent's edit id."""
    short = {
        key: info[key]
        for key in _SUMMARY_KEYS
        if key in info and (info[key] is None or isinstance(info[key], str | int | float))
    }
    parent = info.get("parent")
    if isinstance(parent, dict):
        short["parent"] = parent.get("edit")
    return short


def provenance(info: dict[str, Any]) -> dict[str, Any]:
    """A state's own provenance, with its parent given only as a short reference."""
    own = dict(info)
    if isinstance(own.get("parent"), dict):
        own["parent"] = summary(own["parent"])
    return own


def edit_id(record: dict[str, Any]) -> str:
    """A short digest naming one edit: what was asked, what came out, and its parent."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def link(state_info: dict[str, Any], start_info: dict[str, Any], report: dict[str, Any]) -> None:
    """Give a finished state its edit id and a short reference to the state it started from
    (replacing whatever nested parent record a backend put there)."""
    parent = summary(start_info)
    ident = edit_id(
        {
            "parent": parent.get("edit"),
            **{key: report[key] for key in ("model", "method", "handles", "targets", "steps")},
            "final_points": report["final_points"],
            "parameters": report["parameters"],
            "seed": report["seed"],
        }
    )
    state_info.update(edit=ident, method=report["method"], steps=report["steps"], parent=parent)
    report["edit"] = ident


def build(run, state_info, points, trace, stopped, seconds, arrival) -> dict[str, Any]:
    """The report of ``run`` (a :class:`~.run.DragRun`) after ``trace``'s steps."""
    ins = run.instruction
    start, gen = ins.start, ins.gen
    steps = len(trace)
    return {
        "model": start.info.get("model", gen.name),
        "backend": gen.kind,
        "method": ins.method,
        "seed": start.info.get("seed"),
        "image_size": [int(start.image_size[0]), int(start.image_size[1])],
        "handles": ins.handles.tolist(),
        "targets": run.initial_targets.tolist(),
        "final_targets": run.current_targets.tolist(),
        "target_changes": list(run.target_changes),
        "final_points": np.asarray(points, dtype=np.float64).tolist(),
        "mask": ins.mask is not None,
        "steps": steps,
        **arrival,
        "stopped": stopped,
        "seconds": seconds,
        "seconds_per_step": seconds / steps if steps else 0.0,
        "device": str(gen.device),
        "parameters": asdict(ins.settings),
        "versions": {
            "napari_freedrag": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "start": provenance(start.info),
        "trace": trace,
    }
