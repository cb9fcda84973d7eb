"""Small Qt helpers and choice lists for the dock widget's controls."""

from __future__ import annotations

from magicgui.widgets import Container, Label

from napari_freedrag.errors import FreeDragError

CHECKPOINT_FILE = "checkpoint file…"
LDM_FOLDER = "latent-diffusion folder…"


def wrap(label: Label) -> None:
    """Long messages wrap instead of widening the dock (and squeezing the canvas)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    policy = label.native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    label.native.setSizePolicy(policy)


def collapse(container: Container, title: str):
    """Put ``container`` inside a collapsible section (closed) at the same place."""
    from superqt import QCollapsible

    native = container.native
    parent_layout = native.parentWidget().layout()
    collapsible = QCollapsible(title)
    parent_layout.insertWidget(parent_layout.indexOf(native), collapsible)
    collapsible.addWidget(native)
    collapsible.collapse(animate=False)
    return collapsible


def scroll(container: Container) -> None:
    """Put ``container`` in a vertical scroll area at the same place.

    napari docks a magicgui widget's inner QWidget (not magicgui's own scroll area), so
    without this a tall dock would force the whole window taller than the screen.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea

    native = container.native
    parent_layout = native.parentWidget().layout()
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    parent_layout.insertWidget(parent_layout.indexOf(native), area)
    area.setWidget(native)
    bar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(native.minimumSizeHint().width() + bar)
    # Controls shown or hidden later (model kind, Advanced) change the width they need: the
    # dock follows, so nothing is ever clipped at its right edge.
    native.installEventFilter(_width_follower(area, bar))


def _width_follower(area, bar: int):
    """An event filter keeping `area` as wide as its contents need (Qt imported lazily)."""
    from qtpy.QtCore import QEvent, QObject

    class FitWidth(QObject):
        def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
            if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show):
                area.setMinimumWidth(watched.minimumSizeHint().width() + bar)
            return False

    return FitWidth(area)  # parented to the area: lives as long as it


def available_devices() -> list[str]:
    """``auto`` plus the devices this machine has: cpu, cuda:N, mps."""
    import torch

    devices = ["auto", "cpu"]
    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def model_choices() -> list[str]:
    """The bundled model, categories whose checkpoint is in the folder, then file pickers."""
    found = []
    try:
        from napari_freedrag.models.registry import known_models

        found = [
            entry.name
            for entry in known_models()
            if entry.path_found is not None and entry.name != "cells"
        ]
    except (ImportError, FreeDragError, OSError):
        pass
    return ["cells", *found, CHECKPOINT_FILE, LDM_FOLDER]
