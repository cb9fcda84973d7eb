"""Accuracy on ground truth: run every variant on every instruction, segment the result and
measure the dragged cells (centroid distance to target, success within ``success_px``,
change outside the edited region, drag-then-reverse consistency)."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from napari_freedrag.bench.config import CATEGORIES, BenchConfig
from napari_freedrag.bench.instructions import Instruction, edit_region, plan_instructions
from napari_freedrag.bench.summary import summarise
from napari_freedrag.cellseg import match, segment
from napari_freedrag.errors import DivergedError


def measure(inst: Instruction, start_image, image, config: BenchConfig) -> dict[str, Any]:
    """Segment the result and measure the dragged cell(s) against the instruction."""
    from skimage.metrics import structural_similarity

    found_cells = segment(image)
    errors, found, taken = [], [], set()
    if inst.category == "stretch":
        cell = inst.cells[0]
        k = match(found_cells, cell.mask | inst.expected[0], taken)
        if k is None:
            error, drift, length = inst.stretch_px, None, None
        else:
            now = found_cells[k]
            length = float(now.length)
            error = abs(length - cell.length - inst.stretch_px)
            drift = float(np.linalg.norm(now.centroid - cell.centroid))
        errors.append(error)
        found.append(k is not None)
        extra = {
            "length_before_px": cell.length,
            "length_after_px": length,
            "stretch_px": inst.stretch_px,
            "centroid_drift_px": drift,
        }
    else:
        extra = {"final_centroids": []}
        for cell, target, expected in zip(inst.cells, inst.targets, inst.expected, strict=True):
            k = match(found_cells, cell.mask | expected, taken)
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


def run_drag(backend, start, handles, targets, variant, config, mask=None) -> tuple[Any, dict]:
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
    """Plan the instructions, run every variant on each, measure; raw rows and summaries."""
    instructions = plan_instructions(backend, config)
    if instructions:  # warm up outside the timed runs
        first = instructions[0]
        for variant in config.variants.values():
            run_drag(
                backend,
                first.start,
                first.handles,
                first.targets,
                variant,
                replace(config, max_steps=2),
            )
    log(
        f"  {len(instructions)} instructions: "
        + ", ".join(f"{c} {sum(i.category == c for i in instructions)}" for c in CATEGORIES)
    )
    rows, examples = [], []
    for number, inst in enumerate(instructions):
        row, images = _run_instruction(backend, inst, number, config)
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


def _run_instruction(backend, inst: Instruction, number: int, config: BenchConfig):
    """The JSON row of one instruction, and the result images by variant."""
    start = inst.start
    row = {
        "id": number,
        "category": inst.category,
        "image_seed": inst.seed,
        "handles": inst.handles.tolist(),
        "targets": inst.targets.tolist(),
        "drag_px": np.linalg.norm(inst.targets - inst.handles, axis=1).tolist(),
        "cell_areas": [c.area for c in inst.cells],
        "results": {},
    }
    if inst.stretch_px is not None:
        row["stretch_px"] = inst.stretch_px
    images = {"start": start.image}
    for name, variant in config.variants.items():
        result, summary = run_drag(backend, start, inst.handles, inst.targets, variant, config)
        if result is not None:
            summary.update(measure(inst, start.image, result.image, config))
            images[name] = result.image
            if config.reverse:
                summary["reverse"] = _reverse(backend, result, start.image, variant, config)
        if inst.category in config.masked_categories:
            region = edit_region(inst, config.region_dilation)
            masked, masked_summary = run_drag(
                backend, start, inst.handles, inst.targets, variant, config, region
            )
            if masked is not None:
                masked_summary.update(measure(inst, start.image, masked.image, config))
            summary["masked"] = masked_summary
        row["results"][name] = summary
    return row, images


def _reverse(backend, result, original: np.ndarray, variant: dict, config) -> dict[str, Any]:
    """Drag back from the result (targets to handles) and compare with the original."""
    from skimage.metrics import structural_similarity

    back, summary = run_drag(backend, result.state, result.targets, result.handles, variant, config)
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
