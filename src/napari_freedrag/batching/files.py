"""The output folder, proven writable before any edit runs (files go in through
:func:`napari_freedrag.io.atomic_path`, so a reader never sees half a file)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from napari_freedrag.errors import InputError


def writable_folder(folder: Path) -> Path:
    """``folder``, created if needed and test-written, before any edit runs."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file; give a folder for the batch's outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"--out {folder}: cannot write there ({reason})") from None
    return folder.resolve()
