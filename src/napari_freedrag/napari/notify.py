"""One message per failure: what a user reads in the status and in napari's notification."""

from __future__ import annotations

import logging

from napari_freedrag.errors import FreeDragError

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """The message a user reads: FreeDragErrors as written, bugs with their type."""
    if isinstance(exc, FreeDragError):
        text = str(exc)
    elif "out of memory" in str(exc).lower():
        text = (
            "out of memory on the model's device: use a smaller model or image, free memory "
            "used by other programs, or choose device 'cpu'"
        )
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (see the log for details)"
    return " ".join(text.split())


def notify_error(exc: BaseException) -> None:
    """Show ``exc`` as one napari notification (bugs also go to the log with traceback)."""
    from napari.utils.notifications import show_error

    if not isinstance(exc, FreeDragError):
        log.error("FreeDrag failed", exc_info=exc)
    show_error(f"FreeDrag: {one_line(exc)}")
