"""Whether a cells generator has collapsed: how much its samples differ from each other.

A GAN whose discriminator wins outright stops drawing varied images long before its
SMDs say why: the samples converge on one layout. This prints, per export, the
per-pixel standard deviation across samples (uint8, as the viewer shows them) beside the
same figure for as many dataset images, and the spread of W across z (the norm of its
per-dimension SD over the norm of its mean), which a mapping network that squeezes z
into a narrow W lowers. Seconds per export.

    OMP_NUM_THREADS=1 python benchmarks/cells_diversity_probe.py \\
        src/napari_freedrag/models/cells/weights/cells.safetensors runs/cells-00*kimg.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_freedrag.errors import InputError
from napari_freedrag.io import write_report
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
from napari_freedrag.training.cells.dataset import make_images
from napari_freedrag.training.cells.quality import DATASET_SEED, GENERATED_SEED, generate_images
from napari_freedrag.training.cells.state import export_info, trained_min_semi_minor


def pixel_spread(images: np.ndarray) -> float:
    """Mean over pixels and channels of the SD across images."""
    return float(images.astype(np.float64).std(axis=0).mean())


@torch.no_grad()
def probe(export: Path, count: int) -> dict:
    G = build_generator(*load_checkpoint(export)).eval()
    z = torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(0))
    w = G.mapping(z, None)[:, 0]
    return {
        "file": str(export),
        "kimg": export_info(export).get("kimg"),
        "w_relative_spread": float(w.std(0).norm() / w.mean(0).norm()),
        "pixel_sd_generated": pixel_spread(generate_images(G, count, seed=GENERATED_SEED)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path, help="exported cells .safetensors")
    parser.add_argument("--count", type=int, default=400, help="images in each set")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        variant = trained_min_semi_minor(args.exports)
    except InputError as exc:
        parser.error(str(exc))
    dataset_spread = pixel_spread(make_images(args.count, DATASET_SEED, min_semi_minor=variant))
    print(f"dataset: per-pixel SD across {args.count} images {dataset_spread:.1f}")
    rows = []
    for export in args.exports:
        row = probe(export, args.count)
        rows.append(row)
        print(
            f"{export}: kimg {row['kimg']}  per-pixel SD {row['pixel_sd_generated']:.1f}  "
            f"W spread {row['w_relative_spread']:.2f}",
            flush=True,
        )
    if args.json:
        write_report(args.json, {"pixel_sd_dataset": dataset_spread, "exports": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
