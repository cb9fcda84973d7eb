"""One whole benchmark run: the model frozen in a private copy, the environment, accuracy
and speed, as the JSON report ``napari-freedrag bench`` writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_freedrag.bench.accuracy import accuracy
from napari_freedrag.bench.config import CATEGORIES, MODE_DOCS, MODES, BenchConfig
from napari_freedrag.bench.speed import speed
from napari_freedrag.engine.protocol import METHODS
from napari_freedrag.errors import InputError

SCHEMA = "napari-freedrag-bench/1"


def run_benchmark(config: BenchConfig, backend=None, log=None) -> dict[str, Any]:
    """Run accuracy and speed; return the JSON-ready report.

    ``backend`` replaces ``config.model`` for the accuracy part (tests pass a small one).
    """
    log = log or (lambda message: None)
    began = time.perf_counter()
    for name in config.counts:
        if name not in CATEGORIES:
            raise InputError(f"unknown instruction category {name!r}; use {', '.join(CATEGORIES)}")
    for mode in config.speed_modes:
        if mode not in MODES:
            raise InputError(f"unknown speed mode {mode!r}; use {', '.join(MODES)}")
    with tempfile.TemporaryDirectory(prefix="napari-freedrag-bench-") as folder:
        # A model file may be replaced while the run goes on (a training run exporting
        # snapshots): every part of the run reads one private copy.
        source = _model_file(config.model) if backend is None else None
        frozen = _private_copy(source, Path(folder)) if source is not None else None
        if backend is None:
            from napari_freedrag.models.registry import load_generator

            backend = load_generator(frozen or config.model, device=config.device)
            if backend.kind != "stylegan2":
                raise InputError(
                    f"the benchmark needs a StyleGAN2 model (it samples images from seeds); "
                    f"{config.model!r} is a {backend.kind} model"
                )
        generators = [
            {**spec, "model": str(frozen)} if frozen and spec.get("model") == config.model else spec
            for spec in config.speed_generators
        ]
        report = _run(config, backend, source, frozen, generators, log)
    report["wall_seconds"] = time.perf_counter() - began
    return report


def _run(config, backend, source, frozen, generators, log) -> dict[str, Any]:
    size = tuple(backend.sample(config.first_image_seed, config.truncation).image_size)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "environment": environment(),
        "config": asdict(config),
        "mode_docs": MODE_DOCS,
        "model": describe_model(config.model, backend, size, source, frozen),
        "presets": {m: asdict(backend.preset(m, size)) for m in METHODS},
    }
    log(f"accuracy on {report['model']['name']} ({backend.device})")
    report["accuracy"] = accuracy(backend, config, log)
    report["speed"] = speed(config, generators, log)
    return report


def environment() -> dict[str, Any]:
    import scipy
    import skimage

    from napari_freedrag import __version__

    cuda = torch.cuda.is_available()
    return {
        "versions": {
            "napari_freedrag": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scikit-image": skimage.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
        },
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
    }


def describe_model(model: str, backend, image_size, source=None, frozen=None) -> dict:
    """Name, file, SHA-256 and configuration of the model the numbers come from."""
    info: dict[str, Any] = {
        "name": model if source else backend.name,
        "kind": backend.kind,
        "image_size": list(image_size),
    }
    if frozen is not None:
        info["file"] = str(source)
        info["sha256"] = hashlib.sha256(frozen.read_bytes()).hexdigest()
        config_file = frozen.with_suffix(".json")
        if config_file.is_file():
            info["config"] = json.loads(config_file.read_text())
    return info


def _private_copy(path: Path, folder: Path) -> Path:
    """Copy a checkpoint (and its ``.json`` config, if any) into ``folder``."""
    copy = folder / path.name
    shutil.copyfile(path, copy)
    if path.with_suffix(".json").is_file():
        shutil.copyfile(path.with_suffix(".json"), copy.with_suffix(".json"))
    return copy


def _model_file(model: str) -> Path | None:
    if model.lower() == "cells":
        from napari_freedrag.models.cells import bundled_weights_path

        return bundled_weights_path()
    path = Path(model).expanduser()
    return path if path.is_file() else None
