"""``python -m napari_freedrag``: the same as the ``napari-freedrag`` command."""

from napari_freedrag.cli import main

raise SystemExit(main())
