"""FreeDrag against DragGAN, side by side: accuracy on ground truth, speed and memory.

Accuracy: images of the bundled ``cells`` model are segmented with the cells quality
check's scikit-image segmentation; each instruction moves a cell's centroid or stretches
it along its major axis; both methods run the same instruction from the same seed; the
result is segmented again and the dragged cell measured (centroid distance to the target,
success within a few pixels, change outside the edited region, drag-then-reverse
consistency).  Robustness categories: targets near the border, two handles on two cells,
large drags.

Speed: seconds per optimiser step, time to target and peak memory for both methods on the
cells model and on random-weight StyleGAN2 generators (standard 256/512 px configurations,
built here), with three ways of computing the features; each configuration runs in its own
process so that its peak memory is its own.

    napari-freedrag bench --quick --out bench-quick.json   # CI-sized, < 10 min on 2 cores
    napari-freedrag bench --out bench.json                  # the run docs/benchmarks.md shows
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_freedrag.engine.protocol import METHODS
from napari_freedrag.errors import DivergedError, InputError

#: Ways of computing the drag features, compared for speed (all give the same numbers
#: where the engine reads them, so both methods follow the same trajectory in each).
MODES = ("receptive", "feature-map", "full-synthesis")
MODE_DOCS = {
    "receptive": "as shipped: layers above the feature block never run; high-resolution "
    "layers compute only the receptive field of the patches the engine reads",
    "feature-map": "partial synthesis: the whole feature map up to the feature block",
    "full-synthesis": "every step also synthesises the rest of the image, as the reference "
    "implementations do",
}
CATEGORIES = ("move", "stretch", "border", "pair", "large")
#: What runs on each accuracy instruction: a method, parameter overrides, and whether
#: FreeDrag's ``l`` is calibrated on the start image (see :func:`calibrated_l`).
VARIANTS: dict[str, dict[str, Any]] = {
    "freedrag": {"method": "freedrag"},
    "draggan": {"method": "draggan"},
}
#: FreeDrag with ``l`` measured on the model instead of the preset's fixed value.
CALIBRATED = {"freedrag-calibrated-l": {"method": "freedrag", "calibrate_l": True}}
#: The standard StyleGAN2 configuration (FFHQ-style), random weights.
STANDARD_GENERATOR = {
    "z_dim": 512,
    "w_dim": 512,
    "mapping_layers": 8,
    "channel_base": 32768,
    "channel_max": 512,
    "num_fp16_res": 4,
    "conv_clamp": 256,
}


@dataclass
class BenchConfig:
    """Everything a run depends on; recorded verbatim in the JSON.

    Distances are image pixels.  ``counts`` is instructions per category.  Each speed
    generator is a dict: ``{"name", "model"}`` for a MODEL string or ``{"name",
    "resolution", ...STANDARD_GENERATOR}`` for a random-weight one, plus ``max_steps``
    (cap of the time-to-target run in ``receptive`` mode) and ``mode_steps`` (cap in the
    other modes).
    """

    name: str = "custom"
    model: str = "cells"
    device: str = "auto"
    seed: int = 0
    first_image_seed: int = 0
    max_image_seeds: int = 400
    truncation: float = 0.7
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 1))
    move_distance: tuple[float, float] = (6.0, 10.0)
    large_distance: tuple[float, float] = (14.0, 18.0)
    stretch_amount: tuple[float, float] = (6.0, 9.0)
    border_gap: float = 3.0
    edge_margin: float = 2.0
    success_px: float = 2.0
    region_dilation: int = 3
    max_steps: int = 300
    reverse: bool = True
    masked_categories: tuple[str, ...] = ()
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(VARIANTS))
    examples: int = 4
    speed_generators: list[dict[str, Any]] = field(default_factory=list)
    speed_modes: tuple[str, ...] = MODES
    speed_drag_fraction: float = 0.125
    speed_devices: tuple[str, ...] = ("cpu",)
    isolate: bool = True


def quick_config(model: str = "cells") -> BenchConfig:
    """CI-sized: a few instructions, short caps, random generator at 256 px only."""
    return BenchConfig(
        name="quick",
        model=model,
        counts={"move": 3, "stretch": 2, "border": 1, "pair": 1, "large": 1},
        variants={**VARIANTS, **CALIBRATED},
        max_steps=80,
        examples=2,
        speed_generators=[
            {"name": model, "model": model, "max_steps": 80, "mode_steps": 20},
            {
                "name": "random-256",
                "resolution": 256,
                **STANDARD_GENERATOR,
                "max_steps": 30,
                "mode_steps": 3,
            },
        ],
        speed_devices=_devices(),
    )


def full_config(model: str = "cells") -> BenchConfig:
    """The run docs/benchmarks.md reports (about 35 minutes on 2 shared CPU cores)."""
    return BenchConfig(
        name="full",
        model=model,
        counts={"move": 12, "stretch": 6, "border": 5, "pair": 5, "large": 5},
        variants={**VARIANTS, **CALIBRATED},
        masked_categories=("move",),
        speed_generators=[
            {"name": model, "model": model, "max_steps": 300, "mode_steps": 300},
            {
                "name": "random-256",
                "resolution": 256,
                **STANDARD_GENERATOR,
                "max_steps": 300,
                "mode_steps": 6,
            },
            {
                "name": "random-512",
                "resolution": 512,
                **STANDARD_GENERATOR,
                "max_steps": 300,
                "mode_steps": 5,
            },
        ],
        speed_devices=_devices(),
    )


def _devices() -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


# --------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------


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
        "schema": "napari-freedrag-bench/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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


# --------------------------------------------------------------------------------------
# Accuracy on segmented cells
# --------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One segmented cell: mask, centroid and major axis from the pixel coordinates."""

    mask: np.ndarray
    centroid: np.ndarray
    axis: np.ndarray  # unit vector (row, col) along the major axis
    length: float  # major axis length, 4 sqrt(largest eigenvalue), as regionprops
    area: int


def segment(image: np.ndarray) -> list[Cell]:
    """The cells in an ``(H, W, 3)`` uint8 image (the cells quality check's segmentation)."""
    from napari_freedrag.models.cells.quality import segment_cells

    cells = []
    for region in segment_cells(image):
        coords = region.coords.astype(np.float64)
        centroid = coords.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov((coords - centroid).T, bias=True))
        mask = np.zeros(image.shape[:2], dtype=bool)
        mask[tuple(region.coords.T)] = True
        cells.append(
            Cell(mask, centroid, vectors[:, -1], 4 * np.sqrt(max(values[-1], 0)), int(region.area))
        )
    return cells


def shift_mask(mask: np.ndarray, offset) -> np.ndarray:
    from scipy import ndimage

    return ndimage.shift(mask.astype(np.float32), offset, order=0, mode="constant") > 0.5


def stretch_mask(cell: Cell, amount: float) -> np.ndarray:
    """Where the cell would be if stretched by ``amount`` px along its major axis."""
    half = cell.axis * amount / 2
    steps = max(int(np.ceil(amount / 2)), 1)
    out = cell.mask.copy()
    for k in range(1, steps + 1):
        out |= shift_mask(cell.mask, half * k / steps) | shift_mask(cell.mask, -half * k / steps)
    return out


def _inside(mask: np.ndarray, margin: float) -> bool:
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return bool(
        rows.size
        and rows.min() >= margin
        and cols.min() >= margin
        and rows.max() <= height - 1 - margin
        and cols.max() <= width - 1 - margin
    )


def _direction(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(angle), np.cos(angle)])


def plan_instruction(category: str, cells: list[Cell], rng, config: BenchConfig) -> dict | None:
    """One instruction of ``category`` on an image's cells, or ``None`` if none fits."""
    if not cells:
        return None
    size = cells[0].mask.shape
    margin = config.edge_margin
    order = rng.permutation(len(cells))
    if category in ("move", "large"):
        low, high = config.move_distance if category == "move" else config.large_distance
        for index in order:
            cell = cells[index]
            for _ in range(20):
                delta = _direction(rng) * rng.uniform(low, high)
                expected = shift_mask(cell.mask, delta)
                if _inside(expected, margin) and expected.sum() >= 0.9 * cell.area:
                    return _instruction(
                        category, [cell], [cell.centroid], [cell.centroid + delta], [expected]
                    )
        return None
    if category == "border":
        for index in order:
            cell = cells[index]
            rows, cols = np.nonzero(cell.mask)
            gaps = {
                (-1, 0): rows.min(),
                (1, 0): size[0] - 1 - rows.max(),
                (0, -1): cols.min(),
                (0, 1): size[1] - 1 - cols.max(),
            }
            direction, gap = min(gaps.items(), key=lambda item: item[1])
            distance = gap - config.border_gap
            if config.move_distance[0] / 2 <= distance <= config.large_distance[1]:
                delta = np.asarray(direction, dtype=np.float64) * distance
                return _instruction(
                    category,
                    [cell],
                    [cell.centroid],
                    [cell.centroid + delta],
                    [shift_mask(cell.mask, delta)],
                )
        return None
    if category == "stretch":
        for index in order:
            cell = cells[index]
            amount = rng.uniform(*config.stretch_amount)
            reach = 0.3 * cell.length
            ends = [cell.centroid - reach * cell.axis, cell.centroid + reach * cell.axis]
            goals = [ends[0] - amount / 2 * cell.axis, ends[1] + amount / 2 * cell.axis]
            expected = stretch_mask(cell, amount)
            if _inside(expected, margin):
                inst = _instruction(category, [cell], ends, goals, [expected])
                inst["stretch_px"] = float(amount)
                return inst
        return None
    if category == "pair":
        if len(cells) < 2:
            return None
        # The two most alike cells (by area): the hardest to tell apart while tracking.
        pairs = [
            (abs(a.area - b.area) / max(a.area, b.area), i, j)
            for i, a in enumerate(cells)
            for j, b in enumerate(cells)
            if i < j
        ]
        _, i, j = min(pairs)
        for _ in range(30):
            delta = _direction(rng) * rng.uniform(*config.move_distance)
            expected = [shift_mask(cells[k].mask, delta) for k in (i, j)]
            if all(_inside(m, margin) for m in expected) and not (expected[0] & expected[1]).any():
                return _instruction(
                    category,
                    [cells[i], cells[j]],
                    [cells[i].centroid, cells[j].centroid],
                    [cells[i].centroid + delta, cells[j].centroid + delta],
                    expected,
                )
        return None
    raise InputError(f"unknown instruction category {category!r}")


def _instruction(category, cells, handles, targets, expected) -> dict:
    return {
        "category": category,
        "cells": cells,
        "expected": expected,
        "handles": np.asarray(handles, dtype=np.float64),
        "targets": np.asarray(targets, dtype=np.float64),
    }


def plan_instructions(backend, config: BenchConfig) -> list[dict]:
    """Instructions per ``config.counts``, one per image, categories taken in turn."""
    rng = np.random.default_rng(config.seed)
    wanted = {name: count for name, count in config.counts.items() if count > 0}
    planned: list[dict] = []
    seed = config.first_image_seed
    while wanted and seed < config.first_image_seed + config.max_image_seeds:
        start = backend.sample(seed, truncation=config.truncation)
        cells = segment(start.image)
        for category in sorted(wanted, key=lambda name: (-wanted[name], CATEGORIES.index(name))):
            inst = plan_instruction(category, cells, rng, config)
            if inst is not None:
                inst.update(seed=seed, start=start)
                planned.append(inst)
                wanted[category] -= 1
                if not wanted[category]:
                    del wanted[category]
                break
        seed += 1
    return planned


def edit_region(inst: dict, dilation: int) -> np.ndarray:
    """Pixels the instruction may change: the cells now and where they should end up."""
    from scipy import ndimage

    region = np.any([c.mask for c in inst["cells"]] + inst["expected"], axis=0)
    return ndimage.binary_dilation(region, iterations=dilation) if dilation else region


def _match(cells: list[Cell], reference: np.ndarray, taken: set[int]) -> int | None:
    overlaps = [
        int((c.mask & reference).sum()) if k not in taken else 0 for k, c in enumerate(cells)
    ]
    return int(np.argmax(overlaps)) if overlaps and max(overlaps) > 0 else None


def measure(inst: dict, start_image: np.ndarray, image: np.ndarray, config) -> dict[str, Any]:
    """Segment the result and measure the dragged cell(s) against the instruction."""
    from skimage.metrics import structural_similarity

    found_cells = segment(image)
    errors, found, taken = [], [], set()
    if inst["category"] == "stretch":
        cell = inst["cells"][0]
        k = _match(found_cells, cell.mask | inst["expected"][0], taken)
        if k is None:
            error, drift, length = inst["stretch_px"], None, None
        else:
            now = found_cells[k]
            length = float(now.length)
            error = abs(length - cell.length - inst["stretch_px"])
            drift = float(np.linalg.norm(now.centroid - cell.centroid))
        errors.append(error)
        found.append(k is not None)
        extra = {
            "length_before_px": cell.length,
            "length_after_px": length,
            "stretch_px": inst["stretch_px"],
            "centroid_drift_px": drift,
        }
    else:
        extra = {"final_centroids": []}
        for cell, target, expected in zip(
            inst["cells"], inst["targets"], inst["expected"], strict=True
        ):
            k = _match(found_cells, cell.mask | expected, taken)
            if k is None:
                errors.append(float(np.linalg.norm(target - cell.centroid)))
                extra["final_centroids"].append(None)
            else:
                taken.add(k)
                errors.append(float(np.linalg.norm(found_cells[k].centroid - target)))
                extra["final_centroids"].append(found_cells[k].centroid.tolist())
            found.append(k is not None)
    outside = ~edit_region(inst, config.region_dilation)
    diff = np.abs(image.astype(np.float64) - start_image.astype(np.float64))
    _, ssim_map = structural_similarity(
        start_image, image, channel_axis=-1, data_range=255, full=True
    )
    return {
        "error_px": float(np.mean(errors)),
        "errors_px": errors,
        "success": bool(all(found) and max(errors) <= config.success_px),
        "found": all(found),
        "outside_fraction": float(outside.mean()),
        "outside_mae": float(diff[outside].mean()) if outside.any() else None,
        "outside_ssim": float(ssim_map[outside].mean()) if outside.any() else None,
        **extra,
    }


def _run_drag(backend, start, handles, targets, variant, config, mask=None) -> tuple[Any, dict]:
    """One drag of a variant; returns the result (``None`` if it diverged) and a summary."""
    from napari_freedrag.engine.run import drag

    method = variant["method"]
    overrides = dict(variant.get("overrides", {}))
    if variant.get("calibrate_l"):
        overrides["l"] = calibrated_l(backend, start, handles, targets, overrides)
    try:
        result = drag(
            backend,
            start,
            handles,
            targets,
            mask,
            method,
            max_steps=config.max_steps,
            preview_every=0,
            **overrides,
        )
    except DivergedError as error:
        result = getattr(error, "result", None)
        summary = {"diverged": str(error)}
        if result is None:
            return None, summary
    else:
        summary = {"diverged": None}
    if overrides:
        summary["overrides"] = overrides
    distances = np.linalg.norm(result.points - result.targets, axis=1)
    summary.update(
        steps=result.steps,
        converged=result.converged,
        seconds=result.seconds,
        seconds_per_step=result.seconds / result.steps if result.steps else None,
        time_to_target=result.seconds if result.converged else None,
        final_points=result.points.tolist(),
        tracked_error_px=float(distances.mean()),
    )
    return result, summary


def calibrated_l(backend, start, handles, targets, overrides=None) -> float:
    """FreeDrag's ``l`` for this model: the patch discrepancy one sub-motion (``d``) along
    the drag makes on the start image, mean over the handles.

    ``l`` is documented as the expected discrepancy per sub-motion, but the preset is one
    absolute number tuned on NVIDIA's models; features of another model may be on another
    scale (the line search then treats every candidate as already matched).
    """
    from napari_freedrag.engine.patches import discrepancy, patch_features, patch_offsets
    from napari_freedrag.engine.presets import apply_overrides

    params = apply_overrides(backend.preset("freedrag", start.image_size), overrides or {})
    session = backend.session(start, None, "freedrag")
    scale = torch.tensor(session.feature_scale, dtype=torch.float64)
    h = torch.as_tensor(np.asarray(handles, dtype=np.float64)) * scale
    t = torch.as_tensor(np.asarray(targets, dtype=np.float64)) * scale
    distance = (t - h).norm(dim=1, keepdim=True)
    ahead = h + (t - h) / distance.clamp(min=1e-9) * distance.clamp(max=params.d)
    radius = params.patch_radius * (scale if params.patch_units == "image" else torch.ones(2))
    offsets = patch_offsets(params.patch_grid, (float(radius[0]), float(radius[1])))
    with torch.no_grad():
        features = session.features(session.latent.detach(), None)
        value = discrepancy(
            patch_features(features, ahead, offsets), patch_features(features, h, offsets)
        )
    return max(float(value.mean()), 1e-6)


def accuracy(backend, config: BenchConfig, log) -> dict[str, Any]:
    """Plan the instructions, run both methods on each, measure; raw rows and summaries."""
    instructions = plan_instructions(backend, config)
    if instructions:  # warm up outside the timed runs
        first = instructions[0]
        for variant in config.variants.values():
            _run_drag(
                backend,
                first["start"],
                first["handles"],
                first["targets"],
                variant,
                replace(config, max_steps=2),
            )
    log(
        f"  {len(instructions)} instructions: "
        + ", ".join(f"{c} {sum(i['category'] == c for i in instructions)}" for c in CATEGORIES)
    )
    rows, examples = [], []
    for number, inst in enumerate(instructions):
        start = inst["start"]
        row = {
            "id": number,
            "category": inst["category"],
            "image_seed": inst["seed"],
            "handles": inst["handles"].tolist(),
            "targets": inst["targets"].tolist(),
            "drag_px": np.linalg.norm(inst["targets"] - inst["handles"], axis=1).tolist(),
            "cell_areas": [c.area for c in inst["cells"]],
            "results": {},
        }
        if "stretch_px" in inst:
            row["stretch_px"] = inst["stretch_px"]
        images = {"start": start.image}
        for name, variant in config.variants.items():
            result, summary = _run_drag(
                backend, start, inst["handles"], inst["targets"], variant, config
            )
            if result is not None:
                summary.update(measure(inst, start.image, result.image, config))
                images[name] = result.image
                if config.reverse:
                    summary["reverse"] = _reverse(backend, result, start.image, variant, config)
            if inst["category"] in config.masked_categories:
                region = edit_region(inst, config.region_dilation)
                masked, masked_summary = _run_drag(
                    backend, start, inst["handles"], inst["targets"], variant, config, region
                )
                if masked is not None:
                    masked_summary.update(measure(inst, start.image, masked.image, config))
                summary["masked"] = masked_summary
            row["results"][name] = summary
        rows.append(row)
        log("  " + _row_line(row))
        if len(examples) < config.examples and len(images) == 1 + len(config.variants):
            examples.append({"id": number, **{k: _png(v) for k, v in images.items()}})
    return {
        "variants": config.variants,
        "instructions": rows,
        "summary": summarise(rows, config),
        "examples": examples,
    }


def _reverse(backend, result, original: np.ndarray, variant: dict, config) -> dict[str, Any]:
    """Drag back from the result (targets to handles) and compare with the original."""
    from skimage.metrics import structural_similarity

    back, summary = _run_drag(
        backend, result.state, result.targets, result.handles, variant, config
    )
    if back is None:
        return summary
    diff = np.abs(back.image.astype(np.float64) - original.astype(np.float64))
    summary.update(
        ssim=float(structural_similarity(original, back.image, channel_axis=-1, data_range=255)),
        mae=float(diff.mean()),
    )
    summary.pop("final_points")
    return summary


def _row_line(row: dict) -> str:
    parts = [f"#{row['id']} {row['category']:<7} seed {row['image_seed']:<3}"]
    for method, r in row["results"].items():
        error = r.get("error_px")
        parts.append(
            f"{method} err {error:.1f}px {r['steps']} st {r['seconds']:.1f}s"
            if error is not None
            else f"{method} diverged"
        )
    return " | ".join(parts)


def _png(image: np.ndarray) -> str:
    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, image, extension=".png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict], config: BenchConfig) -> dict[str, Any]:
    """Per category (and ``all``) and method: means, rates and counts."""
    out: dict[str, Any] = {}
    for category in (*CATEGORIES, "all"):
        chosen = [r for r in rows if category in ("all", r["category"])]
        if not chosen:
            continue
        out[category] = {}
        for method in config.variants:
            results = [r["results"][method] for r in chosen]
            ran = [r for r in results if "error_px" in r]
            reverse = [r.get("reverse", {}) for r in ran]
            masked = [r["masked"] for r in ran if "error_px" in r.get("masked", {})]
            out[category][method] = {
                "n": len(results),
                "diverged": sum(bool(r["diverged"]) for r in results),
                "error_px_mean": _mean(r["error_px"] for r in ran),
                "error_px_median": float(np.median([r["error_px"] for r in ran])) if ran else None,
                "success_rate": _mean(float(r["success"]) for r in ran),
                "tracked_error_px_mean": _mean(r["tracked_error_px"] for r in ran),
                "converged_rate": _mean(float(r["converged"]) for r in ran),
                "steps_mean": _mean(r["steps"] for r in ran),
                "seconds_mean": _mean(r["seconds"] for r in ran),
                "seconds_per_step_mean": _mean(r["seconds_per_step"] for r in ran),
                "time_to_target_mean": _mean(r["time_to_target"] for r in ran),
                "outside_mae_mean": _mean(r["outside_mae"] for r in ran),
                "outside_ssim_mean": _mean(r["outside_ssim"] for r in ran),
                "reverse_ssim_mean": _mean(r.get("ssim") for r in reverse),
                "reverse_mae_mean": _mean(r.get("mae") for r in reverse),
                "calibrated_l_mean": _mean(r.get("overrides", {}).get("l") for r in ran),
                "masked_n": len(masked),
                "masked_error_px_mean": _mean(r["error_px"] for r in masked),
                "masked_success_rate": _mean(float(r["success"]) for r in masked),
                "masked_outside_mae_mean": _mean(r["outside_mae"] for r in masked),
                "masked_outside_ssim_mean": _mean(r["outside_ssim"] for r in masked),
            }
    return out


# --------------------------------------------------------------------------------------
# Speed: one process per (generator, device, method, mode)
# --------------------------------------------------------------------------------------


def speed(config: BenchConfig, generators: list[dict], log) -> dict[str, Any]:
    """Every (generator, device, mode, method); calibrated variants on the shipped path."""
    calibrated = [name for name, v in config.variants.items() if v.get("calibrate_l")]
    runs = []
    for spec in generators:
        for device in config.speed_devices:
            for mode in config.speed_modes:
                names = [*METHODS, *(calibrated if mode == "receptive" else [])]
                for name in names:
                    variant = config.variants.get(name, {"method": name})
                    job = {
                        "generator": spec,
                        "device": device,
                        "variant": name,
                        "method": variant["method"],
                        "calibrate_l": bool(variant.get("calibrate_l")),
                        "mode": mode,
                        "max_steps": spec["max_steps"]
                        if mode == "receptive"
                        else min(spec["max_steps"], spec["mode_steps"]),
                        "drag_fraction": config.speed_drag_fraction,
                        "truncation": config.truncation,
                    }
                    result = _in_subprocess(job) if config.isolate else speed_run(job)
                    runs.append(result)
                    log(
                        f"  speed {spec['name']:<10} {device:<4} {mode:<14} {name:<8} "
                        f"{result['s_per_step_median']:.3f} s/step, {result['steps']} steps, "
                        f"converged {result['converged']}, peak {result['peak_memory_gib']} GiB"
                    )
    return {"runs": runs}


def _in_subprocess(job: dict) -> dict[str, Any]:
    command = [sys.executable, "-m", "napari_freedrag.bench", "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"speed worker failed for {job}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_speed_backend(spec: dict, device: str):
    """The generator a speed job names: a MODEL string, or a random-weight StyleGAN2."""
    if "model" in spec:
        from napari_freedrag.models.registry import load_generator

        return load_generator(spec["model"], device=device)
    from napari_freedrag.models.stylegan2.backend import StyleGAN2Backend
    from napari_freedrag.models.stylegan2.network import Generator

    torch.manual_seed(spec.get("seed", 0))
    generator = Generator(
        spec["z_dim"],
        0,
        spec["w_dim"],
        spec["resolution"],
        3,
        mapping_kwargs={"num_layers": spec["mapping_layers"]},
        channel_base=spec["channel_base"],
        channel_max=spec["channel_max"],
        num_fp16_res=spec.get("num_fp16_res", 0),
        conv_clamp=spec.get("conv_clamp"),
    )
    return StyleGAN2Backend(generator, spec["name"], device)


class ModeBackend:
    """A StyleGAN2 backend whose sessions compute features another way (speed only)."""

    def __init__(self, inner, mode: str):
        self.inner, self.mode = inner, mode
        self.name, self.kind, self.device = inner.name, inner.kind, inner.device

    def preset(self, method, image_size):
        return self.inner.preset(method, image_size)

    def sample(self, seed, truncation=0.7):
        return self.inner.sample(seed, truncation)

    def session(self, start, mask, method):
        return ModeSession(self.inner, self.inner.session(start, mask, method), start, self.mode)


class ModeSession:
    """Delegates to the real session but ignores the engine's read boxes, and in
    ``full-synthesis`` mode also runs the blocks above the feature block every step."""

    def __init__(self, backend, inner, start, mode: str):
        self._backend, self._inner, self._mode = backend, inner, mode
        self._start_ws = start.latent.detach().to(backend.device)
        self.latent = inner.latent
        self.image_size = inner.image_size
        self.feature_scale = inner.feature_scale

    def features(self, latent, boxes=None):
        features = self._inner.features(latent, None)
        if self._mode == "full-synthesis":
            synthesis = self._backend.generator.synthesis
            ws = torch.cat([latent, self._start_ws[:, latent.shape[1] :]], dim=1)
            synthesis.run(ws, after=self._backend.feature_res, x=features[None])
        return features

    def mask_term(self, latent, features):
        return self._inner.mask_term(latent, features)

    def render(self, latent):
        return self._inner.render(latent)

    def finish(self, latent):
        return self._inner.finish(latent)


def speed_run(job: dict) -> dict[str, Any]:
    """Drag from the image centre by ``drag_fraction`` of the width; time every step."""
    from napari_freedrag.engine.run import drag, drag_steps

    device = job["device"]
    backend = build_speed_backend(job["generator"], device)
    if job["mode"] != "receptive":
        backend = ModeBackend(backend, job["mode"])
    start = backend.sample(0, truncation=job["truncation"])
    height, width = start.image_size
    handle = np.array([[(height - 1) / 2, (width - 1) / 2]])
    target = handle + [0.0, round(job["drag_fraction"] * width)]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    overrides = {}
    if job.get("calibrate_l"):
        overrides["l"] = calibrated_l(backend, start, handle, target)
    # Warm up (first-call allocations, lazy initialisation) outside the timed run.
    drag(backend, start, handle, target, None, job["method"], max_steps=2, preview_every=0)
    rss_before = _rss_gib()
    steps = drag_steps(
        backend,
        start,
        handle,
        target,
        None,
        job["method"],
        max_steps=job["max_steps"],
        preview_every=0,
        **overrides,
    )
    times = []
    for step in steps:
        if cuda:
            torch.cuda.synchronize()
        times.append(step.seconds)
    result = steps.result
    durations = np.diff([0.0, *times])
    timed = durations[1:] if len(durations) > 1 else durations
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else _peak_rss_gib()
    return {
        **{k: job[k] for k in ("device", "method", "mode", "max_steps")},
        "variant": job.get("variant", job["method"]),
        "overrides": overrides,
        "generator": job["generator"]["name"],
        "resolution": height,
        "parameters_m": sum(p.numel() for p in _generator(backend).parameters()) / 1e6,
        "torch_threads": torch.get_num_threads(),
        "handle": handle[0].tolist(),
        "target": target[0].tolist(),
        "steps": result.steps,
        "converged": result.converged,
        "seconds": result.seconds,
        "time_to_target": result.seconds if result.converged else None,
        "first_step_s": float(durations[0]) if len(durations) else None,
        "s_per_step_median": float(np.median(timed)) if len(timed) else None,
        "s_per_step_mean": float(np.mean(timed)) if len(timed) else None,
        "final_points": result.points.tolist(),
        "peak_memory_gib": round(peak, 3),
        "memory_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
        "rss_before_drag_gib": round(rss_before, 3),
    }


def _generator(backend):
    return getattr(backend, "inner", backend).generator


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _rss_gib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return _peak_rss_gib()


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-freedrag bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 10 min on 2 cores)")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON results")
    parser.add_argument("--model", default="cells", help="model for accuracy (default: cells)")
    parser.add_argument("--device", default="auto", help="device for accuracy: auto, cpu, cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """``napari-freedrag bench``: run, write the JSON, print where it went."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if getattr(args, "worker", None):
        print(json.dumps(speed_run(json.loads(args.worker))))
        return 0
    from napari_freedrag.io import check_output_path, write_report

    check_output_path(args.out, "--out", (".json",))  # before minutes of work, not after
    model = getattr(args, "model", "cells")
    config = quick_config(model) if args.quick else full_config(model)
    config.device = getattr(args, "device", "auto")
    report = run_benchmark(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    path = write_report(args.out, report)
    print(f"wrote {path} ({report['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    from napari_freedrag.cli import main as cli_main

    raise SystemExit(cli_main(["bench", *sys.argv[1:]]))  # one-line errors, as the CLI
