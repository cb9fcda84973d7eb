"""What a cells training snapshot's discriminator has learnt: memorised the training set?

Prints D's mean logit on training images, on as many unseen dataset images and on the
snapshot's own generated images. A D that memorises its 20 000 training images scores
them above the unseen ones (StyleGAN2-ADA's sign of overfitting, after which G drifts);
the gap between unseen and generated is what D tells apart. Also prints the rank
correlation, over unseen images, of D's logit with their cells' true eccentricity and
count: which way D pushes G on the shape measures.

    OMP_NUM_THREADS=1 python benchmarks/cells_discriminator_probe.py \\
        training-snapshots/cells-run6.pt --json probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from napari_freedrag.training.cells.dataset import make_cell_image, make_images
from napari_freedrag.training.cells.state import load_snapshot
from napari_freedrag.training.cells.train import images_to_tensor


@torch.no_grad()
def probe(snapshot: Path, count: int) -> dict:
    state = load_snapshot(snapshot, torch.device("cpu"))
    cfg = state.config
    # The training set's first images, and unseen ones of the same dataset variant.
    seen = make_images(count, cfg.seed, cfg.resolution, cfg.min_semi_minor)
    unseen = [
        make_cell_image(s, cfg.resolution, cfg.min_semi_minor)
        for s in range(50_000, 50_000 + count)
    ]
    eccentricity = [
        np.mean([np.sqrt(1 - (c.semi_axes[1] / c.semi_axes[0]) ** 2) for c in item.cells])
        for item in unseen
    ]
    cells = [len(item.cells) for item in unseen]
    G, D = state.G_ema, state.D
    fakes = G.synthesis(G.mapping(torch.randn(count, G.z_dim), None), noise_mode="random")
    logits = {
        "training": D(images_to_tensor(seen)).ravel().numpy(),
        "unseen": D(images_to_tensor(np.stack([item.image for item in unseen]))).ravel().numpy(),
        "generated": D(fakes).ravel().numpy(),
    }
    return {
        "snapshot": str(snapshot),
        "kimg": state.nimg / 1000,
        "mean_logit": {name: float(v.mean()) for name, v in logits.items()},
        "sd_logit": {name: float(v.std()) for name, v in logits.items()},
        "rho_unseen_logit_vs_eccentricity": float(spearmanr(logits["unseen"], eccentricity)[0]),
        "rho_unseen_logit_vs_cell_count": float(spearmanr(logits["unseen"], cells)[0]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshots", nargs="+", type=Path, help="training snapshot.pt files")
    parser.add_argument("--count", type=int, default=1024, help="images in each set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for snapshot in args.snapshots:
        row = probe(snapshot, args.count)
        rows.append(row)
        means = row["mean_logit"]
        print(
            f"{snapshot}: kimg {row['kimg']:.1f}  D logit training {means['training']:+.3f} "
            f"unseen {means['unseen']:+.3f} generated {means['generated']:+.3f}  "
            f"rho(eccentricity) {row['rho_unseen_logit_vs_eccentricity']:+.2f} "
            f"rho(cells) {row['rho_unseen_logit_vs_cell_count']:+.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
