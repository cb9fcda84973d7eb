"""Projection quality on the bundled ``cells`` model: PSNR, SSIM and seconds per mode.

The images are *real* in the sense that matters: drawn by the cells dataset generator
(``make_cell_image``) with seeds far from the training set's stream and from every test,
not sampled from the model. For every mode (W, W+, PTI) and step count each image is
projected with the SSIM + L2 distance (the cells weights carry no discriminator) and
measured against the model-size source with scikit-image's PSNR and SSIM.

``--figure`` also writes a before / reconstruction / after-drag picture of one image.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/projection_quality.py \\
        --json docs/projection.json --figure docs/images/projection-cells.png
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import napari_freedrag as nfd
from napari_freedrag.models.cells import bundled_weights_path
from napari_freedrag.training.cells.dataset import make_cell_image
from napari_freedrag.training.cells.state import trained_min_semi_minor

#: Seeds of the held-out images (tests use 0-99; training draws from one stream of seed 0).
HELD_OUT_SEEDS = range(9001, 9100)


def held_out_image(seed: int, min_semi_minor: float):
    """A held-out image of the dataset variant the bundled weights were trained on."""
    return make_cell_image(seed, min_semi_minor=min_semi_minor)


def measure(gen, images, modes, step_counts) -> list[dict]:
    rows = []
    for mode in modes:
        for steps in step_counts:
            psnr, ssim, seconds, cpu = [], [], [], []
            for image in images:
                began, began_cpu = time.perf_counter(), time.process_time()
                state = gen.invert(image, mode=mode, steps=steps)
                seconds.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
                psnr.append(state.info["projection"]["psnr"])
                ssim.append(state.info["projection"]["ssim"])
            row = {
                "mode": mode, "steps": steps, "images": len(images),
                "psnr_mean": float(np.mean(psnr)), "psnr_min": float(np.min(psnr)),
                "ssim_mean": float(np.mean(ssim)), "ssim_min": float(np.min(ssim)),
                "seconds_mean": float(np.mean(seconds)), "cpu_seconds_mean": float(np.mean(cpu)),
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| mode | steps | PSNR dB (mean / worst) | SSIM (mean / worst) | CPU s / image | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['steps']} | {row['psnr_mean']:.2f} / {row['psnr_min']:.2f}"
            f" | {row['ssim_mean']:.3f} / {row['ssim_min']:.3f} | {row['cpu_seconds_mean']:.1f}"
            f" | {row['seconds_mean']:.1f} |"
        )
    return "\n".join(lines)


def figure(gen, seed: int, mode: str, steps: int, path: Path, min_semi_minor: float) -> dict:
    """Source, reconstruction and a FreeDrag edit of the reconstruction, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = held_out_image(seed, min_semi_minor)
    cell = max(sample.cells, key=lambda c: c.mask.sum())
    handle = np.array(cell.centroid)
    direction = np.array([32.0, 32.0]) - handle
    direction /= np.linalg.norm(direction) + 1e-9
    target = np.clip(handle + 8.0 * direction, 4, 59)
    state = gen.invert(sample.image, mode=mode, steps=steps)
    result = nfd.drag(gen, state, [handle], [target], max_steps=200)
    record = state.info["projection"]
    panels = [
        (sample.image, f"source (dataset seed {seed})"),
        (state.image, f"{mode}, {steps} steps: {record['psnr']:.1f} dB, SSIM {record['ssim']:.2f}"),
        (result.image, f"dragged from it ({result.steps} steps)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3), dpi=120)
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    for ax in axes[1:]:
        ax.annotate("", xy=target[::-1], xytext=handle[::-1],
                    arrowprops={"arrowstyle": "->", "color": "yellow", "lw": 1.5})  # fmt: skip
        ax.plot(*handle[::-1], "o", color="red", ms=4)
        ax.plot(*target[::-1], "o", color="deepskyblue", ms=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return {"seed": seed, "handle": handle.tolist(), "target": target.tolist(),
            "final_point": result.points[0].tolist(), "drag_steps": result.steps,
            "projection": record}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6, help="held-out images per setting")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--modes", nargs="+", default=["w", "w+", "pti"])
    parser.add_argument("--json", type=Path, help="write the rows (and the figure's record)")
    parser.add_argument("--figure", type=Path, help="before / reconstruction / after PNG")
    parser.add_argument("--figure-mode", default="pti")
    parser.add_argument("--figure-steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    gen = nfd.load_generator("cells", device="cpu")
    variant = trained_min_semi_minor([bundled_weights_path()])  # read once, not per image
    images = [held_out_image(seed, variant).image for seed in list(HELD_OUT_SEEDS)[: args.count]]
    rows = measure(gen, images, args.modes, args.steps) if args.count else []
    print(markdown_table(rows))
    document = {
        "model": "cells", "device": "cpu", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "seeds": list(HELD_OUT_SEEDS)[: args.count], "rows": rows,
    }  # fmt: skip
    if args.figure:
        document["figure"] = figure(
            gen, HELD_OUT_SEEDS[-1], args.figure_mode, args.figure_steps, args.figure, variant
        )
        print(json.dumps(document["figure"]["projection"]["final_losses"]))
    if args.json:
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
