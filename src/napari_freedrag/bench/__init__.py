"""FreeDrag against DragGAN, side by side: accuracy on ground truth, speed and memory.

Accuracy (``instructions``, ``accuracy``, ``summary``): images of the bundled ``cells``
model are segmented (``napari_freedrag.cellseg``); each instruction moves a cell's centroid
or stretches it along its major axis; every variant runs the same instruction from the
same seed; the result is segmented again and the dragged cell measured. Robustness
categories: targets near the border, two handles on two cells, large drags.

Speed (``speed``, ``memory``): seconds per optimiser step, time to target and peak memory
for both methods on the cells model and on random-weight StyleGAN2 generators (standard
256/512 px configurations), with three ways of computing the features; each
configuration runs in its own process so that its peak memory is its own.

The drag sanity check (``sanity``) is the quick look at one question: do dragged cells
arrive?

    napari-freedrag bench --quick --out bench-quick.json   # CI-sized, < 10 min on 2 cores
    napari-freedrag bench --out bench.json                  # the run docs/benchmarks.md shows
"""

from napari_freedrag.bench.command import build_parser, main
from napari_freedrag.bench.config import (
    CALIBRATED,
    CATEGORIES,
    MODES,
    VARIANTS,
    BenchConfig,
    full_config,
    quick_config,
)
from napari_freedrag.bench.report import run_benchmark

__all__ = [
    "CALIBRATED",
    "CATEGORIES",
    "MODES",
    "VARIANTS",
    "BenchConfig",
    "build_parser",
    "full_config",
    "main",
    "quick_config",
    "run_benchmark",
]
