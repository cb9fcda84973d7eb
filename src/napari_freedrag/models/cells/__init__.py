"""The bundled ``cells`` model: a small StyleGAN2 trained by this project on procedural
fluorescence-microscopy cells (see ``docs/cells-model.md``), shipped as package data so the
plugin works offline on first launch."""

from __future__ import annotations

from pathlib import Path


def bundled_weights_path() -> Path:
    """The bundled generator weights (``cells.safetensors``; its config is ``cells.json``)."""
    return Path(__file__).parent / "weights" / "cells.safetensors"
