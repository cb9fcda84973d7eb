"""How close the ``cells`` generator's images are to the procedural dataset.

Both sets go through the same scikit-image segmentation (smooth, fixed threshold, fill,
label, regionprops); the table compares cells per image, cell area, eccentricity and the
mean intensity of each channel inside the cells, as means, standard deviations and
standardised mean differences (SMD = difference of means / pooled SD).

    python -m napari_freedrag.training.cells.quality --count 200 --grid docs/images/cells-grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_freedrag.cellseg import segment_cells
from napari_freedrag.imaging import model_pixels_to_uint8

MEASURES = ("cells_per_image", "area", "eccentricity", "mean_red", "mean_green", "mean_blue")

#: Seeds of the two sets every cells comparison draws: generated z from one, dataset
#: images from another that training (seeds 0, 1, ...) never uses, so figures from
#: different tools and sessions compare the same images.
GENERATED_SEED = 0
DATASET_SEED = 10_000


def measure_images(images) -> dict[str, np.ndarray]:
    """Per-image cell counts and per-cell shape and intensity measures, pooled."""
    values = {name: [] for name in MEASURES}
    for image in images:
        regions = segment_cells(image)
        values["cells_per_image"].append(len(regions))
        for region in regions:
            values["area"].append(region.area)
            values["eccentricity"].append(region.eccentricity)
            for channel, name in enumerate(("mean_red", "mean_green", "mean_blue")):
                values[name].append(region.intensity_mean[channel])
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def compare(real: dict, generated: dict) -> list[dict]:
    """One row per measure: mean and SD of each set and their standardised difference."""
    rows = []
    for name in MEASURES:
        r, g = real[name], generated[name]
        pooled = np.sqrt((r.var(ddof=1) + g.var(ddof=1)) / 2) if len(r) > 1 and len(g) > 1 else 0
        smd = (g.mean() - r.mean()) / pooled if pooled > 0 else float("nan")
        rows.append(
            {
                "measure": name,
                "real_mean": r.mean(),
                "real_sd": r.std(ddof=1),
                "gen_mean": g.mean(),
                "gen_sd": g.std(ddof=1),
                "smd": smd,
                "n_real": len(r),
                "n_gen": len(g),
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| measure | dataset mean ± SD (n) | generated mean ± SD (n) | SMD |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['measure']} | {row['real_mean']:.3f} ± {row['real_sd']:.3f} ({row['n_real']})"
            f" | {row['gen_mean']:.3f} ± {row['gen_sd']:.3f} ({row['n_gen']})"
            f" | {row['smd']:+.2f} |"
        )
    return "\n".join(lines)


def generate_images(G, count: int, seed: int = 0, truncation: float = 1.0, batch: int = 25):
    """``count`` uint8 images from seeds ``seed .. seed+count-1`` (NumPy RandomState z),
    converted to uint8 as the StyleGAN2 backend shows them."""
    import torch

    out = []
    with torch.no_grad():
        for first in range(seed, seed + count, batch):
            seeds = range(first, min(first + batch, seed + count))
            z = (
                torch.from_numpy(
                    np.concatenate([np.random.RandomState(s).randn(1, G.z_dim) for s in seeds])
                )
                .float()
                .to(G.mapping.w_avg.device)
            )
            img = G.synthesis(G.mapping(z, None, truncation_psi=truncation), noise_mode="const")
            out.append(model_pixels_to_uint8(img).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def tile(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The first ``rows * cols`` of ``(N, R, R, 3)`` images as one grid image, row-major."""
    r = images.shape[1]
    return (
        images[: rows * cols]
        .reshape(rows, cols, r, r, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(rows * r, cols * r, 3)
    )


def side_by_side_grid(
    generated: np.ndarray, real: np.ndarray, rows: int = 6, cols: int = 6, gap: int = 8
) -> np.ndarray:
    """Generated samples on the left, dataset samples on the right, a white gap between."""
    left, right = tile(generated, rows, cols), tile(real, rows, cols)
    spacer = np.full((left.shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, spacer, right], axis=1)


def main(argv: list[str] | None = None) -> int:
    from skimage.io import imsave

    from napari_freedrag.models.cells import bundled_weights_path
    from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
    from napari_freedrag.training.cells.dataset import make_images
    from napari_freedrag.training.cells.state import trained_min_semi_minor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: bundled weights")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--truncation", type=float, default=1.0)
    parser.add_argument("--grid", type=Path, default=None, help="write a sample grid PNG here")
    args = parser.parse_args(argv)

    weights = args.weights or bundled_weights_path()
    G = build_generator(*load_checkpoint(weights)).eval()
    generated = generate_images(G, args.count, seed=GENERATED_SEED, truncation=args.truncation)
    variant = trained_min_semi_minor([weights])  # the dataset it was trained on
    real = make_images(args.count, DATASET_SEED, generated.shape[1], variant)
    print(markdown_table(compare(measure_images(real), measure_images(generated))))
    if args.grid is not None:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        imsave(args.grid, side_by_side_grid(generated, real), check_contrast=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
