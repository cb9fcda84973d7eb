"""Drag sanity on the bundled ``cells`` model: do segmented cells go where they are dragged?

A thin command line over :mod:`napari_freedrag.bench.sanity` (which describes the check).

    OMP_NUM_THREADS=1 python benchmarks/cells_drag_sanity.py --count 20 --mask --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import napari_freedrag as nfd
from napari_freedrag.bench.sanity import drag_sanity, figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cells", help="MODEL string for load_generator")
    parser.add_argument("--count", type=int, default=20, help="number of drag instructions")
    parser.add_argument("--mask", action="store_true", help="also run the masked drags")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--figure", type=Path, default=None,
        help="PNG of the first 4 drags: start | result, handle red, target cyan",
    )  # fmt: skip
    args = parser.parse_args(argv)

    gen = nfd.load_generator(args.model, device="cpu")
    report, rows, pairs = drag_sanity(gen, args.count, args.max_steps, args.mask)
    print(json.dumps(report, indent=1))
    if args.figure:
        from skimage.io import imsave

        imsave(args.figure, figure(pairs[:4]), check_contrast=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": report, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
