"""Re-calibrate exported ``cells`` generators with the current feature-scale rule.

Exports carry the feature scale of the rule they were written with; this writes each one
again (weights rescaled exactly, the image unchanged) next to an output folder, so that
older exports and the shipped weights are evaluated the way a new export would be:

    python -m napari_freedrag.training.cells.recalibrate EXPORT.safetensors ... --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_freedrag.training.cells.state import recalibrate_export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", type=Path, help="exported .safetensors files")
    parser.add_argument("--out", type=Path, required=True, help="folder for the new files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.exports:
        written = recalibrate_export(path, args.out / path.stem)
        print(f"{path} -> {written}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
