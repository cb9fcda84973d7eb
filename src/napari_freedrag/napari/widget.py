"""The FreeDrag dock widget: pick a model, make an image, place points, Run, Stop.

A thin magicgui face over :class:`~napari_freedrag.napari.runner.DragController`, which
does the work; every user mistake becomes one napari notification and changes nothing.
"""

from __future__ import annotations

import random
from contextlib import suppress
from pathlib import Path

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)

from napari_freedrag.errors import FreeDragError
from napari_freedrag.napari import layers as L
from napari_freedrag.napari.history_control import HistoryControl
from napari_freedrag.napari.runner import controller_for, notify_error, unwrap_viewer

CHECKPOINT_FILE = "checkpoint file…"
LDM_FOLDER = "latent-diffusion folder…"
NO_SOURCE = "(none: sample from the seed)"

#: Widget field -> engine parameter name, for the fields that are engine overrides.
PARAM_FIELDS = {"l": "l", "d": "d", "lr": "lr", "mask_weight": "mask_weight"}
#: Fields only FreeDrag has.
FREEDRAG_ONLY = ("l", "d")


class FreeDragWidget(Container):
    """Dock widget: model, seed, source image, method and parameters, Run / Stop."""

    def __init__(self, napari_viewer, backend=None):
        super().__init__(labels=True)
        self.viewer = unwrap_viewer(napari_viewer)
        self.controller = controller_for(napari_viewer)
        #: A backend object to use instead of loading the model field (tests, scripts).
        self.backend = backend
        self._preset_key = None

        self.model = ComboBox(label="model", choices=_model_choices(), value="cells")
        self.model_path = FileEdit(label="model file", mode="r", visible=False)
        self.device = ComboBox(label="device", choices=available_devices(), value="auto")
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.truncation = FloatSpinBox(label="truncation", min=0.0, max=1.5, step=0.05, value=0.7)
        self.source = ComboBox(label="source image", choices=self._source_choices)
        self.prompt = LineEdit(label="prompt", visible=False)
        self.lora_steps = SpinBox(label="LoRA steps", min=0, max=1000, value=0, visible=False)
        # How a StyleGAN2 projects a source image (docs/projection.md measures the choices).
        self.projection = ComboBox(
            label="projection",
            choices=[("W+ (default)", "w+"), ("W", "w"), ("PTI (tunes a copy of G)", "pti")],
            visible=False,
        )
        self.projection_steps = SpinBox(
            label="projection steps", min=1, max=5000, value=200, visible=False
        )
        self.new_button = PushButton(text="New image")
        self.random_button = PushButton(text="Random seed")
        self.method = ComboBox(
            label="method", choices=[("FreeDrag", "freedrag"), ("DragGAN", "draggan")]
        )
        self.l = FloatSpinBox(label="l (patch distance)", min=0.01, max=10, step=0.05, value=0.3)
        self.d = FloatSpinBox(label="d (feature px)", min=0.5, max=20, step=0.5, value=3.0)
        self.max_steps = SpinBox(label="max steps", min=0, max=5000, value=300)
        self.lr = FloatSpinBox(label="learning rate", min=0.0001, max=1.0, step=0.0001, value=0.002)
        self.mask_weight = FloatSpinBox(label="mask weight", min=0.0, max=1000.0, value=10.0)
        self.preview_every = SpinBox(label="preview every", min=0, max=1000, value=5)
        self.keep_frames = CheckBox(text="keep preview frames", value=False)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.reset_button = PushButton(text="Reset points")
        self.save_path = FileEdit(label="save to", mode="w", filter="*.png *.tif")
        self.save_button = PushButton(text="Save edit")
        self.history = HistoryControl(self.controller)
        self.status = Label(value="press 'New image' to start")
        self.status.native.setWordWrap(True)

        self.extend(
            [
                self.model, self.model_path, self.device, self.seed, self.truncation,
                self.source, self.prompt, self.lora_steps, self.projection,
                self.projection_steps, self.new_button,
                self.random_button, self.method, self.l, self.d, self.max_steps, self.lr,
                self.mask_weight, self.preview_every, self.keep_frames, self.run_button,
                self.stop_button, self.reset_button, self.history, self.save_path,
                self.save_button, self.status,
            ]
        )  # fmt: skip

        self.model.changed.connect(self._on_model_choice)
        # Qt's own signal: magicgui sends no `changed` when the choice becomes None.
        self.source.native.currentIndexChanged.connect(self._show_projection_fields)
        self.method.changed.connect(self._on_method)
        self.new_button.clicked.connect(self.new_image)
        self.random_button.clicked.connect(self._random_seed)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.controller.stop)
        self.reset_button.clicked.connect(self.reset_points)
        self.save_button.clicked.connect(self.save)
        self.controller.status.connect(self._set_status)
        self.controller.busy.connect(self._on_busy)
        self.controller.image_ready.connect(self._on_image_ready)
        # napari itself calls reset_choices (the source list) when layers change; the
        # controller's signals hold this widget weakly, so a closed widget just goes away.
        if self.controller.running:
            self._on_busy(True)

    # ---------------------------------------------------------------- actions
    def model_spec(self) -> str:
        """The MODEL string the fields describe (as the CLI takes it)."""
        choice = self.model.value
        if choice in (CHECKPOINT_FILE, LDM_FOLDER):
            path = str(self.model_path.value or "")
            return f"ldm:{path}" if choice == LDM_FOLDER else path
        return choice

    def set_model(self, spec: str) -> None:
        """Point the model fields at a MODEL string (cells, category, path, ldm:PATH)."""
        if spec in self.model.choices:
            self.model.value = spec
        elif spec.startswith("ldm:"):
            self.model.value = LDM_FOLDER
            self.model_path.value = Path(spec[4:])
        else:
            self.model.value = CHECKPOINT_FILE
            self.model_path.value = Path(spec)

    def new_image(self):
        """Load the model (once) and show a fresh image from the seed or the source layer."""
        source = None if self.source.value in (None, NO_SOURCE) else self.source.value
        try:
            return self.controller.new_image(
                self.backend if self.backend is not None else self.model_spec(),
                self.seed.value,
                self.truncation.value,
                device=self.device.value,
                source=source,
                prompt=self.prompt.value,
                lora_steps=self.lora_steps.value,
                projection={"mode": self.projection.value, "steps": self.projection_steps.value},
            )
        except FreeDragError as exc:
            notify_error(exc)
            return None

    def run(self):
        """Drag from the selected edit with the points, mask and parameters shown."""
        method = self.method.value
        params = {
            name: getattr(self, field).value
            for field, name in PARAM_FIELDS.items()
            if method == "freedrag" or field not in FREEDRAG_ONLY
        }
        try:
            return self.controller.run(
                method=method,
                max_steps=self.max_steps.value,
                preview_every=self.preview_every.value,
                keep_frames=self.keep_frames.value,
                **params,
            )
        except FreeDragError as exc:
            notify_error(exc)
            return None

    def reset_points(self):
        """Delete every handle and target (the arrows follow)."""
        for name in (L.HANDLES, L.TARGETS):
            layer = self.controller.layers.get(name)
            if layer is not None:
                layer.data = layer.data[:0]

    def save(self):
        """Save the selected edit (PNG/TIFF with its instruction and parameters inside)."""
        if not self.save_path.value or Path(self.save_path.value).is_dir():
            notify_error_text("choose a file name ('save to') ending in .png or .tif first")
            return None
        try:
            path = self.controller.save_selected(self.save_path.value)
        except FreeDragError as exc:
            notify_error(exc)
            return None
        self._set_status(f"saved {path}")
        return path

    # -------------------------------------------------------------- plumbing
    def _random_seed(self):
        self.seed.value = random.randrange(2**31 - 1)
        return self.new_image()

    def _set_status(self, text: str):
        with suppress(RuntimeError):  # the Qt side was deleted (viewer closing mid-run)
            self.status.value = text

    def _on_busy(self, busy: bool):
        with suppress(RuntimeError):
            for button in (self.run_button, self.new_button, self.random_button):
                button.enabled = not busy
            self.stop_button.enabled = busy

    def _on_model_choice(self, choice):
        is_path = choice in (CHECKPOINT_FILE, LDM_FOLDER)
        self.model_path.visible = is_path
        self.model_path.mode = "d" if choice == LDM_FOLDER else "r"
        self.prompt.visible = self.lora_steps.visible = choice == LDM_FOLDER
        self._show_projection_fields()

    def _show_projection_fields(self, _value=None):
        """The projection fields, while a source image would be projected (not with ldm:)."""
        projected = self.source.value not in (None, NO_SOURCE) and self.model.value != LDM_FOLDER
        self.projection.visible = self.projection_steps.visible = projected

    def _on_method(self, method):
        for field in FREEDRAG_ONLY:
            getattr(self, field).visible = method == "freedrag"
        edit = self.controller.current_edit
        if edit is not None:
            self.apply_preset(edit.backend, method, edit.state.image_size)

    def _on_image_ready(self, backend, image_size):
        self.apply_preset(backend, self.method.value, image_size)

    def apply_preset(self, backend, method: str, image_size) -> None:
        """Show a backend's preset values in the parameter fields.

        Only when the kind of model, method or size changes: a new seed keeps the user's
        own settings."""
        key = (backend.kind, getattr(backend, "category", None), method, tuple(image_size))
        if key == self._preset_key:
            return
        self._preset_key = key
        preset = backend.preset(method, tuple(image_size))
        for field, name in PARAM_FIELDS.items():
            if hasattr(preset, name):
                getattr(self, field).value = getattr(preset, name)
        for field in ("max_steps", "preview_every"):
            if getattr(preset, field, None) is not None:
                getattr(self, field).value = getattr(preset, field)

    def _source_choices(self, _widget=None):
        """The user's image layers and FreeDrag samples (not the plugin's own layers)."""
        layers = [
            (layer.name, layer) for layer in self.viewer.layers if self.controller.is_source(layer)
        ]
        return [(NO_SOURCE, None), *layers]


def available_devices() -> list[str]:
    """``auto`` plus the devices this machine has: cpu, cuda:N, mps."""
    import torch

    devices = ["auto", "cpu"]
    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _model_choices() -> list[str]:
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


def notify_error_text(text: str) -> None:
    from napari.utils.notifications import show_error

    show_error(f"FreeDrag: {text}")
