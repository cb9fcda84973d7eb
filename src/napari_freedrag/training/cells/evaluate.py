"""Evaluate exported ``cells`` generators on the three figures that decide which one ships.

(a) the quality SMDs of the six measures (:mod:`.quality`, 600 images, truncation 1);
(b) 36 move instructions planned as ``napari-freedrag bench`` plans its 12 (then only the
moves run): FreeDrag's and DragGAN's success rate (segmented centroid within 2 px of the
target) and median centroid error; (c) the drag sanity check's median progress (20
drags). The sizes are the selection protocol of docs/cells-model.md: the benchmark's 12
moves and 200 images could not tell exports apart from noise; its rule v3 says which
export ships (more moves without losing quality, or better quality without losing moves).

    python -m napari_freedrag.training.cells.evaluate runs/cells/cells-0*kimg.safetensors \\
        --json runs/cells/evaluation.json

``--quality-only`` measures (a) alone (seconds per export instead of a minute or two), to
follow a run's curve; the moves and the sanity check then run on the exports it picks.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_freedrag.training.cells.dataset import MIN_SEMI_MINOR, make_images

#: Selection protocol v3 (docs/cells-model.md): images per set for the SMDs and move
#: instructions planned, large enough that exports differ by more than sampling noise.
SMD_IMAGES = 600
MOVE_INSTRUCTIONS = 36


def quality_smds(
    G,
    count: int = SMD_IMAGES,
    second_sample: bool = False,
    min_semi_minor: float = MIN_SEMI_MINOR,
) -> dict[str, float]:
    """SMD per measure of ``count`` generated images against as many dataset images (of
    the variant ``min_semi_minor`` the generator was trained on).

    ``second_sample`` draws both sets from seeds disjoint from the first (the rule's
    confirmation of a chosen export, so that the best of many is not a lucky sample)."""
    from napari_freedrag.training.cells.quality import (
        DATASET_SEED,
        GENERATED_SEED,
        compare,
        generate_images,
        measure_images,
    )

    generated_seed, dataset_seed = (GENERATED_SEED, DATASET_SEED)
    if second_sample:
        generated_seed, dataset_seed = GENERATED_SEED + count, 2 * DATASET_SEED
    generated = generate_images(G, count, seed=generated_seed, truncation=1.0)
    real = make_images(count, dataset_seed, generated.shape[1], min_semi_minor)
    rows = compare(measure_images(real), measure_images(generated))
    return {row["measure"]: float(row["smd"]) for row in rows}


def move_accuracy(backend, count: int = MOVE_INSTRUCTIONS) -> dict[str, Any]:
    """Success rate and median error of both methods on the full benchmark's moves."""
    from napari_freedrag.bench.accuracy import measure, run_drag
    from napari_freedrag.bench.config import VARIANTS, full_config
    from napari_freedrag.bench.instructions import plan_instructions

    config = replace(full_config(), counts={**full_config().counts, "move": count})
    moves = [i for i in plan_instructions(backend, config) if i.category == "move"]
    out: dict[str, Any] = {"n": len(moves)}
    for name, variant in VARIANTS.items():
        errors, successes = [], []
        for inst in moves:
            result, _ = run_drag(backend, inst.start, inst.handles, inst.targets, variant, config)
            if result is None:
                errors.append(float("inf"))
                successes.append(False)
                continue
            measured = measure(inst, inst.start.image, result.image, config)
            errors.append(measured["error_px"])
            successes.append(measured["success"])
        out[name] = {
            "success_rate": float(np.mean(successes)) if moves else None,
            "error_px_median": float(np.median(errors)) if moves else None,
        }
    return out


def evaluate(
    path: Path,
    sanity_count: int = 20,
    quality_only: bool = False,
    move_count: int = MOVE_INSTRUCTIONS,
    smd_count: int = SMD_IMAGES,
    second_sample: bool = False,
) -> dict[str, Any]:
    """The three figures of one export (or only its SMDs), with its kimg and feature scale."""
    from napari_freedrag.bench.sanity import drag_sanity
    from napari_freedrag.models.registry import load_generator
    from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
    from napari_freedrag.training.cells.state import export_info, trained_min_semi_minor

    began = time.perf_counter()
    info = export_info(path)
    min_semi_minor = trained_min_semi_minor([path])
    G = build_generator(*load_checkpoint(path))
    smds = quality_smds(G, smd_count, second_sample, min_semi_minor)
    row = {
        "file": str(path),
        "kimg": info.get("kimg"),
        "feature_scale": info.get("feature_scale"),
        "smd_images": smd_count,
        "smd_sample": "second" if second_sample else "first",
        "dataset_min_semi_minor": min_semi_minor,
        "smd": smds,
        "max_abs_smd": max(abs(v) for v in smds.values()),
        "mean_abs_smd": float(np.mean([abs(v) for v in smds.values()])),
    }
    if not quality_only:
        backend = load_generator(str(path), device="cpu")
        row["moves"] = move_accuracy(backend, move_count)
        sanity, _, _ = drag_sanity(backend, sanity_count, log=lambda line: None)
        row["sanity_progress_median"] = sanity["progress"]["median"]
        row["sanity_fraction_at_least_half"] = sanity["fraction_progress_at_least_0.5"]
    row["seconds"] = time.perf_counter() - began
    return row


def summary_line(path: Path, row: dict[str, Any]) -> str:
    line = (
        f"{path.name}: kimg {row['kimg']} max|SMD| {row['max_abs_smd']:.2f} "
        f"mean|SMD| {row['mean_abs_smd']:.2f}"
    )
    if "moves" in row:
        moves = row["moves"]
        rates = {
            name: "n/a"
            if moves[name]["success_rate"] is None
            else f"{moves[name]['success_rate']:.2f}"
            for name in ("freedrag", "draggan")
        }
        line += (
            f" moves {moves['n']}: FreeDrag {rates['freedrag']} DragGAN {rates['draggan']} "
            f"sanity {row['sanity_progress_median']:.2f}"
        )
    return line + f" ({row['seconds']:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path, help="exported .safetensors files")
    parser.add_argument("--json", type=Path, default=None, help="append the rows to this file")
    parser.add_argument("--sanity-count", type=int, default=20)
    parser.add_argument(
        "--quality-only", action="store_true", help="only the SMDs: seconds per export"
    )
    parser.add_argument(
        "--moves",
        type=int,
        default=MOVE_INSTRUCTIONS,
        help="move instructions to plan (the benchmark plans 12; 36 is the selection protocol)",
    )
    parser.add_argument(
        "--smd-images",
        type=int,
        default=SMD_IMAGES,
        help="generated and dataset images for the SMDs",
    )
    parser.add_argument(
        "--second-sample",
        action="store_true",
        help="SMDs on seeds disjoint from the default ones (the rule's confirmation)",
    )
    args = parser.parse_args(argv)
    rows = json.loads(args.json.read_text()) if args.json and args.json.is_file() else []
    for path in args.exports:
        row = evaluate(
            path,
            args.sanity_count,
            args.quality_only,
            args.moves,
            args.smd_images,
            args.second_sample,
        )
        rows.append(row)
        print(summary_line(path, row), flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
