"""Keyboard shortcuts for the dock widget, bound through napari's own keybinding API.

They are viewer key bindings, so they work while the canvas has focus and appear in
napari's keybinding machinery like any other; a layer's own binding of the same key wins
while that layer is active (Ctrl+Z while painting the mask undoes the paint stroke).
"""

from __future__ import annotations

import weakref

#: action -> (napari key string, what a user reads in tooltips and docs)
SHORTCUTS = {
    "run": ("Control-Enter", "Ctrl+Enter"),
    "stop": ("Escape", "Esc"),
    "new_image": ("Control-Shift-N", "Ctrl+Shift+N"),
    "undo": ("Control-Z", "Ctrl+Z"),
    "redo": ("Control-Shift-Z", "Ctrl+Shift+Z"),
}


def shortcut_text(action: str) -> str:
    """How the shortcut of ``action`` is written for a user, e.g. ``Ctrl+Enter``."""
    return SHORTCUTS[action][1]


def bind_shortcuts(viewer, widget) -> None:
    """Bind every shortcut of :data:`SHORTCUTS` on ``viewer`` to ``widget``'s action.

    The viewer holds the widget weakly: a closed dock leaves keys that do nothing, and the
    next widget opened on this viewer binds them again (``overwrite``).
    """
    target = weakref.ref(widget)

    def make(action: str):
        def pressed(_viewer=None):
            live = target()
            if live is not None:
                getattr(live, action)()

        pressed.__name__ = f"freedrag_{action}"
        pressed.__doc__ = f"FreeDrag: {action.replace('_', ' ')}"
        return pressed

    for action, (key, _text) in SHORTCUTS.items():
        viewer.bind_key(key, make(action), overwrite=True)
