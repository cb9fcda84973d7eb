"""FreeDrag vs DragGAN on the analytic backend: steps, seconds and where the content lands.

The analytic backend renders Gaussian blobs whose centres are known, so "did the content
arrive" is measured exactly: the dragged blob's centre against the target (blob error).
Each instruction runs with both methods and the analytic presets; seconds are wall time
of the whole drag on this machine (engine plus a backend that costs almost nothing, so
they mostly show the engine's own overhead per step).

    OMP_NUM_THREADS=1 python benchmarks/engine_analytic.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import napari_freedrag as nfd
from napari_freedrag.models.analytic import AnalyticBackend

LAYOUT = [[16, 16], [48, 44], [16, 48]]
BORDER_LAYOUT = [[4, 20], [48, 44], [30, 10]]


def mask_around_path() -> np.ndarray:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[4:29, 4:41] = 1
    return mask


CASES = [
    ("single point, 14 px", LAYOUT, [[16, 16]], [[16, 30]], None),
    ("single point, diagonal 15 px", LAYOUT, [[16, 16]], [[28, 25]], None),
    ("two points", LAYOUT, [[16, 16], [48, 44]], [[26, 16], [48, 34]], None),
    (
        "six points on three blobs",
        LAYOUT,
        [[16, 16], [48, 44], [16, 48], [16, 19], [48, 47], [16, 51]],
        [[22, 20], [42, 40], [22, 44], [22, 23], [42, 43], [22, 47]],
        None,
    ),
    ("on the top border", BORDER_LAYOUT, [[-0.3, 20]], [[-0.4, 34]], None),
    ("with a mask", LAYOUT, [[16, 16]], [[16, 30]], mask_around_path()),
]


def run_case(gen, layout, handles, targets, mask, method):
    start = gen.from_centres(layout)
    before = gen.centres(start.latent).numpy()
    began = time.perf_counter()
    result = nfd.drag(gen, start, handles, targets, mask=mask, method=method)
    seconds = time.perf_counter() - began
    after = gen.centres(result.state.latent).numpy()
    handles = np.clip(np.asarray(handles, float), 0, 63)
    targets = np.clip(np.asarray(targets, float), 0, 63)
    dragged = [int(np.argmin(np.linalg.norm(before - h, axis=1))) for h in handles]
    wanted = before[dragged] + (targets - handles)
    others = [i for i in range(len(before)) if i not in dragged]
    return {
        "steps": result.steps,
        "converged": result.converged,
        "seconds": round(seconds, 3),
        "ms_per_step": round(1000 * seconds / max(result.steps, 1), 2),
        "blob_error_px": round(float(np.linalg.norm(after[dragged] - wanted, axis=1).max()), 2),
        "others_moved_px": (
            round(float(np.linalg.norm(after[others] - before[others], axis=1).max()), 2)
            if others
            else None
        ),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    gen = AnalyticBackend()
    nfd.drag(gen, gen.from_centres(LAYOUT), [[16, 16]], [[16, 18]], max_steps=2)  # warm-up
    rows = []
    print(f"{'instruction':30} {'method':9} {'steps':>5} {'conv':>5} {'s':>6} {'ms/step':>8} "
          f"{'blob err':>8} {'others':>7}")  # fmt: skip
    for name, layout, handles, targets, mask in CASES:
        for method in ("freedrag", "draggan"):
            row = {"instruction": name, "method": method}
            row.update(run_case(gen, layout, handles, targets, mask, method))
            rows.append(row)
            others = row["others_moved_px"]
            print(f"{name:30} {method:9} {row['steps']:5d} {str(row['converged']):>5} "
                  f"{row['seconds']:6.2f} {row['ms_per_step']:8.2f} {row['blob_error_px']:8.2f} "
                  f"{'-' if others is None else f'{others:.2f}':>7}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backend": "analytic 64px", "results": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
