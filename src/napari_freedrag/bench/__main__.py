"""``python -m napari_freedrag.bench``: as ``napari-freedrag bench`` (one-line errors)."""

import sys

from napari_freedrag.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
