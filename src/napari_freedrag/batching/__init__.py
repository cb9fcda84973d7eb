"""Batches of drag edits run on Dask (``napari-freedrag batch``, ``napari_freedrag.batch``).

Dask is an optional extra (``pip install "napari-freedrag[batch]"``); nothing here imports
it until a batch actually has edits to run. See docs/batch.md.
"""

from napari_freedrag.batching.runner import batch
from napari_freedrag.batching.truth import cells_instructions, write_cells_instructions

__all__ = ["batch", "cells_instructions", "write_cells_instructions"]
