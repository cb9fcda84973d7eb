"""Errors a user can cause and should read, as opposed to bugs.

Every face of the tool (CLI, widget, console) catches :class:`FreeDragError` and shows
its message as one line: a CLI line with exit status 2, or a napari notification.
Anything else is a bug and keeps its traceback.
"""


class FreeDragError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class InputError(FreeDragError, ValueError):
    """Bad points, masks, images or parameters."""


class ModelError(FreeDragError):
    """A model that cannot be found, read or used (missing, corrupt, wrong kind)."""


class UnsafeCheckpointError(ModelError):
    """A checkpoint that asks to import or run code; it is refused unread."""


class DivergedError(FreeDragError):
    """The optimisation produced NaN or inf; the last good state is kept."""
