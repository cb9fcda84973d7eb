"""Export a run's preview frames (``DragController.frames()``) as PNG files or a movie."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_freedrag.errors import InputError

MOVIE_SUFFIXES = (".gif", ".mp4", ".webp", ".avi", ".mov")


def export_frames(frames, path, fps: float = 10.0, provenance: dict | None = None) -> Path:
    """Write ``frames`` (a ``(T, H, W, 3)`` uint8 array) to ``path``.

    A folder gets ``frame_0000.png`` ... each carrying ``provenance`` (the edit's entry);
    a ``.gif`` / ``.mp4`` name gets one movie through imageio (``.mp4`` needs imageio's
    ffmpeg or pyav plugin installed).
    """
    data = np.asarray(frames)
    if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8 or len(data) == 0:
        raise InputError(
            f"frames must be a (T, H, W, 3) uint8 stack with at least one frame, got "
            f"{data.shape} {data.dtype}: tick 'keep preview frames' and Run first"
        )
    path = Path(path)
    if path.suffix.lower() in MOVIE_SUFFIXES:
        import imageio.v3 as iio

        from napari_freedrag.io import atomic_path

        try:
            with atomic_path(path) as temp:  # an old movie is replaced only by a whole new one
                if path.suffix.lower() == ".gif":
                    iio.imwrite(temp, data, duration=1000.0 / fps, loop=0)
                else:
                    iio.imwrite(temp, data, fps=fps)
        except (ImportError, OSError, ValueError, TypeError) as exc:
            raise InputError(
                f"cannot write the movie {path.name} ({exc}); save as .gif or to a folder of "
                "PNG frames instead"
            ) from exc
        return path
    if path.suffix:
        raise InputError(
            f"cannot export frames to {path.name}: give a folder name (PNG frames) or a "
            f"movie name ending in {', '.join(MOVIE_SUFFIXES)}"
        )
    from napari_freedrag.io import write_image

    provenance = dict(provenance or {})
    for index, frame in enumerate(data):
        write_image(path / f"frame_{index:04d}.png", frame, {**provenance, "frame": index})
    return path
