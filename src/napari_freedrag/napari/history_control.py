"""The edit history in the dock: a slider over every edit, with what each one is.

The history has no napari axis (a dims slider could line up with a user's z or t), so
the widget shows this control instead; moving it shows that edit, and Run continues
from it.  Undo and Redo walk the same history.
"""

from __future__ import annotations

from contextlib import suppress

from magicgui.widgets import Container, Label, PushButton, Slider

from napari_freedrag.errors import FreeDragError
from napari_freedrag.napari.notify import notify_error


class HistoryControl(Container):
    """Slider + Undo/Redo over a controller's edit history."""

    def __init__(self, controller):
        super().__init__(labels=False)
        self.controller = controller
        self.slider = Slider(label="edit", min=0, max=0, value=0, enabled=False)
        self.undo_button = PushButton(text="Undo edit")
        self.redo_button = PushButton(text="Redo edit")
        self.about = Label(value="no edits yet")
        buttons = Container(widgets=[self.undo_button, self.redo_button], layout="horizontal")
        self.extend([self.slider, buttons, self.about])
        self.slider.changed.connect(self._on_slider)
        self.undo_button.clicked.connect(lambda: self._act(controller.undo))
        self.redo_button.clicked.connect(lambda: self._act(controller.redo))
        controller.history.appended.connect(self.refresh)
        controller.history.current_changed.connect(self.refresh)
        self.refresh()

    def refresh(self, _index=None) -> None:
        """Show the history's length, the current edit and what made it."""
        history = self.controller.history
        with suppress(RuntimeError):  # the dock was closed meanwhile
            self.slider.enabled = len(history) > 1
            with self.slider.changed.blocked():
                self.slider.max = max(len(history) - 1, 0)
                self.slider.value = max(history.current_index, 0)
            edit = history.current
            if edit is not None:
                parent = "" if edit.parent is None else f", from edit {edit.parent}"
                self.about.value = f"edit {history.current_index} of {len(history) - 1}: "
                self.about.value += f"{edit.label}{parent}"

    def _on_slider(self, index: int) -> None:
        self._act(lambda: self.controller.select_edit(int(index)))

    def _act(self, action) -> None:
        try:
            action()
        except FreeDragError as exc:
            notify_error(exc)
        self.refresh()
