"""The FreeDrag dock widget: pick a model, make an image, place points, Run, Stop.

A thin magicgui face over :class:`~napari_freedrag.napari.runner.DragController`, which
does the work; every user mistake becomes one napari notification and changes nothing.
What the user sets is remembered (:mod:`.settings`), explained (:mod:`.tooltips`) and
reachable from the keyboard (:mod:`.keybindings`).
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

from napari_freedrag.errors import FreeDragError, InputError
from napari_freedrag.napari import layers as L
from napari_freedrag.napari.controls import (
    CHECKPOINT_FILE,
    LDM_FOLDER,
    available_devices,
    collapse,
    model_choices,
    scroll,
    wrap,
)
from napari_freedrag.napari.history_control import HistoryControl
from napari_freedrag.napari.keybindings import bind_shortcuts
from napari_freedrag.napari.runner import controller_for, notify_error, unwrap_viewer
from napari_freedrag.napari.settings import (
    PRESET_FIELDS,
    REMEMBERED,
    RememberedFields,
    WidgetSettings,
    with_method,
)
from napari_freedrag.napari.tooltips import guide, tip

NO_SOURCE = "(none: sample from the seed)"

#: Widget field -> engine parameter name, for the fields that are engine overrides.
PARAM_FIELDS = {"l": "l", "d": "d", "lr": "lr", "mask_weight": "mask_weight"}
#: Fields only FreeDrag has.
FREEDRAG_ONLY = ("l", "d")
#: Fields that only a seeded model (StyleGAN2, analytic) uses / only latent diffusion uses.
SEEDED_ONLY = ("seed", "truncation", "random_button")
DIFFUSION_ONLY = ("prompt", "lora_steps")
#: Fields of a StyleGAN2 projection of the source image.
PROJECTION_FIELDS = ("projection", "projection_steps")


class FreeDragWidget(RememberedFields, Container):
    """Dock widget: model, starting image, points, Run / Stop, edit history, saving."""

    def __init__(self, napari_viewer, backend=None, settings: WidgetSettings | None = None):
        super().__init__(labels=False)
        self.viewer = unwrap_viewer(napari_viewer)
        self.controller = controller_for(napari_viewer)
        #: A backend object to use instead of loading the model field (tests, scripts).
        self.backend = backend
        self.settings = settings or WidgetSettings()

        self.guide = Label(value=guide())
        self.model = ComboBox(label="model", choices=model_choices(), value="cells")
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
        self.max_steps = SpinBox(label="max steps", min=0, max=5000, value=300)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.reset_button = PushButton(text="Reset points")
        self.compare_button = PushButton(text="Compare methods")
        self.l = FloatSpinBox(label="move size (l)", min=0.01, max=10, step=0.05, value=0.3)
        self.d = FloatSpinBox(label="longest move (d)", min=0.5, max=20, step=0.5, value=3.0)
        self.lr = FloatSpinBox(label="learning rate", min=0.0001, max=1.0, step=0.0001, value=0.002)
        self.mask_weight = FloatSpinBox(label="keep outside mask", min=0.0, max=1000.0, value=10.0)
        self.preview_every = SpinBox(label="preview every", min=0, max=1000, value=5)
        self.keep_frames = CheckBox(text="keep preview frames", value=False)
        self.restore_button = PushButton(text="Restore defaults")
        self.save_path = FileEdit(label="save to", mode="w", filter="*.png *.tif")
        self.save_button = PushButton(text="Save edit")
        self.movie_path = FileEdit(label="movie file", mode="w", filter="*.gif *.mp4")
        self.fps = SpinBox(label="frames/s", min=1, max=60, value=10)
        self.movie_button = PushButton(text="Save movie")
        self.history = HistoryControl(self.controller)
        self.undo_button = self.history.undo_button
        self.redo_button = self.history.redo_button
        self.status = Label(value="press 'New image' to start")

        row = lambda *ws: Container(widgets=ws, layout="horizontal", labels=False)  # noqa: E731
        box = lambda *ws: Container(widgets=ws, labels=True)  # noqa: E731
        self.advanced = box(
            self.l, self.d, self.lr, self.mask_weight, self.preview_every, self.keep_frames,
            self.restore_button,
        )  # fmt: skip
        body = Container(
            labels=False,
            widgets=[
                self.guide,
                box(self.model, self.model_path, self.device, self.seed, self.truncation,
                    self.source, self.prompt, self.lora_steps, self.projection,
                    self.projection_steps),
                row(self.new_button, self.random_button),
                box(self.method, self.max_steps),
                row(self.run_button, self.stop_button),
                row(self.reset_button, self.compare_button),
                self.history,
                self.advanced,
                box(self.save_path, self.movie_path, self.fps),
                row(self.save_button, self.movie_button),
            ],
        )  # fmt: skip
        self.extend([body, self.status])
        self._collapsible = collapse(self.advanced, "Advanced")
        for label in (self.guide, self.status):
            wrap(label)
        scroll(body)  # a short screen scrolls the controls; the status stays in view
        for name in (*REMEMBERED, *PRESET_FIELDS, *PROJECTION_FIELDS, "source", *_BUTTONS):
            getattr(self, name).tooltip = tip(name)
        # on the whole slider row (magicgui would set it on the bar only, not its readout)
        self.history.slider.native.setToolTip(tip("history_slider"))
        self._defaults = {name: getattr(self, name).value for name in REMEMBERED}
        self._connect()
        self._restore()
        bind_shortcuts(self.viewer, self)
        if self.controller.running:
            self._on_busy(True)

    def _connect(self):
        self.model.changed.connect(self._on_model_choice)
        self.model_path.changed.connect(self._on_model_choice)
        # Qt's own signal: magicgui sends no `changed` when the choice becomes None.
        self.source.native.currentIndexChanged.connect(self._show_projection_fields)
        self.method.changed.connect(self._on_method)
        self.new_button.clicked.connect(self.new_image)
        self.random_button.clicked.connect(self._random_seed)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.reset_button.clicked.connect(self.reset_points)
        self.compare_button.clicked.connect(self.compare)
        self.restore_button.clicked.connect(self.restore_defaults)
        self.save_button.clicked.connect(self.save)
        self.movie_button.clicked.connect(self.save_movie)
        for name in REMEMBERED:
            getattr(self, name).changed.connect(self._remember)
        for name in PRESET_FIELDS:
            getattr(self, name).changed.connect(self._remember_preset)
        self._collapsible.toggled.connect(self._remember)
        self.controller.status.connect(self._set_status)
        self.controller.busy.connect(self._on_busy)
        self.controller.image_ready.connect(self._on_image_ready)
        # napari itself calls reset_choices (the source list) when layers change; the
        # controller's signals hold this widget weakly, so a closed widget just goes away,
        # and one whose Qt side is gone hears nothing more.
        self.native.destroyed.connect(self._disconnect)

    def _disconnect(self, _obj=None):
        for signal, slot in (
            (self.controller.status, self._set_status),
            (self.controller.busy, self._on_busy),
            (self.controller.image_ready, self._on_image_ready),
        ):
            signal.disconnect(slot)

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
        return self._guarded(
            self.controller.new_image,
            self.backend if self.backend is not None else self.model_spec(),
            self.seed.value,
            self.truncation.value,
            device=self.device.value,
            source=source,
            prompt=self.prompt.value,
            lora_steps=self.lora_steps.value,
            projection={"mode": self.projection.value, "steps": self.projection_steps.value},
        )

    def parameters(self, method: str | None = None) -> dict:
        """The engine overrides the fields hold for ``method`` (default: the one shown)."""
        method = method or self.method.value
        return {
            name: getattr(self, field).value
            for field, name in PARAM_FIELDS.items()
            if method == "freedrag" or field not in FREEDRAG_ONLY
        }

    def run(self):
        """Drag from the selected edit with the points, mask and parameters shown."""
        return self._guarded(
            self.controller.run,
            method=self.method.value,
            max_steps=self.max_steps.value,
            preview_every=self.preview_every.value,
            keep_frames=self.keep_frames.value,
            **self.parameters(),
        )

    def stop(self):
        self.controller.stop()

    def undo(self):
        return self._guarded(self.controller.undo)

    def redo(self):
        return self._guarded(self.controller.redo)

    def compare(self):
        """Run FreeDrag, then DragGAN, from the edit shown with the same points."""
        from napari_freedrag.napari.compare import compare_methods

        settings = {"max_steps": self.max_steps.value, "preview_every": self.preview_every.value}
        return self._guarded(
            compare_methods, self.controller, settings, {m: self.parameters(m) for m in _METHODS}
        )

    def reset_points(self):
        """Delete every handle and target (the arrows follow)."""
        for name in (L.HANDLES, L.TARGETS):
            layer = self.controller.layers.get(name)
            if layer is not None:
                layer.data = layer.data[:0]

    def save(self):
        """Save the selected edit (PNG/TIFF with its instruction and parameters inside)."""
        if not self.save_path.value or Path(self.save_path.value).is_dir():
            notify_error(InputError("choose a file name ('save to') ending in .png or .tif"))
            return None
        path = self._guarded(self.controller.save_selected, self.save_path.value)
        if path is not None:
            self._set_status(f"saved {path}")
        return path

    def save_movie(self):
        """Write the preview frames of the run that made the shown edit as a GIF (or MP4)."""
        from napari_freedrag.napari.export import export_frames

        edit = self.controller.current_edit
        if edit is None or not edit.frames:
            error = InputError(
                "no preview frames for the edit shown: tick 'keep preview frames', Run, then save"
            )
        elif not self.movie_path.value or Path(self.movie_path.value).suffix == "":
            error = InputError("choose a 'movie file' name ending in .gif or .mp4")
        else:
            frames = self.controller.frames()
            path = self._guarded(
                export_frames, frames, self.movie_path.value, self.fps.value, edit.entry
            )
            if path is not None:
                self._set_status(f"saved movie {path} ({len(frames)} frames)")
            return path
        notify_error(error)
        return None

    # -------------------------------------------------------------- plumbing
    def _guarded(self, action, *args, **kwargs):
        """Call ``action``; a FreeDragError becomes one notification (and None)."""
        try:
            return action(*args, **kwargs)
        except FreeDragError as exc:
            notify_error(exc)
            return None

    def _random_seed(self):
        self.seed.value = random.randrange(2**31 - 1)
        return self.new_image()

    def _set_status(self, text: str):
        with suppress(RuntimeError):  # the Qt side was deleted (viewer closing mid-run)
            self.status.value = text

    def _on_busy(self, busy: bool):
        with suppress(RuntimeError):
            for button in (self.run_button, self.new_button, self.random_button,
                           self.compare_button, self.undo_button, self.redo_button):  # fmt: skip
                button.enabled = not busy
            self.stop_button.enabled = busy
        self._follow_targets(busy)

    def _follow_targets(self, on: bool) -> None:
        """While a run goes on, a moved target point goes to the run (live re-targeting)."""
        layer = self.controller.layers.get(L.TARGETS)
        if layer is None:
            return
        layer.events.data.disconnect(self._on_targets_moved)
        if on:
            layer.events.data.connect(self._on_targets_moved)

    def _on_targets_moved(self, event=None) -> None:
        if str(getattr(event, "action", "changed")) in ("changing", "adding", "removing"):
            return  # the "before" half of a change: the "after" half follows
        if self.controller.running:
            self._guarded(
                self.controller.retarget, self.controller.layers.points_in_image(L.TARGETS)
            )

    def _is_diffusion(self) -> bool:
        if self.backend is not None:
            return getattr(self.backend, "kind", "") == "ldm"
        return self.model.value == LDM_FOLDER

    def _on_model_choice(self, _value=None):
        choice = self.model.value
        self.model_path.visible = choice in (CHECKPOINT_FILE, LDM_FOLDER)
        self.model_path.mode = "d" if choice == LDM_FOLDER else "r"
        self.model_path.label = "model folder" if choice == LDM_FOLDER else "model file"
        diffusion = self._is_diffusion()
        for name in SEEDED_ONLY:
            getattr(self, name).visible = not diffusion
        for name in DIFFUSION_ONLY:
            getattr(self, name).visible = diffusion
        self._show_projection_fields()

    def _show_projection_fields(self, _index=None):
        """The projection fields, while a source image would be projected (not by ldm:)."""
        projected = self.source.value not in (None, NO_SOURCE) and not self._is_diffusion()
        for name in PROJECTION_FIELDS:
            getattr(self, name).visible = projected

    def _on_method(self, method):
        for field in FREEDRAG_ONLY:
            getattr(self, field).visible = method == "freedrag"
        edit = self.controller.current_edit
        if edit is not None:
            self.apply_preset(edit.backend, method, edit.state.image_size)
        elif self._preset_key:  # no image yet: the remembered values of that method
            self._show_preset(with_method(self._preset_key, method), None)

    def _on_image_ready(self, backend, image_size):
        self.apply_preset(backend, self.method.value, image_size)

    def _source_choices(self, _widget=None):
        """The user's image layers and FreeDrag samples (not the plugin's own layers)."""
        layers = [
            (layer.name, layer) for layer in self.viewer.layers if self.controller.is_source(layer)
        ]
        return [(NO_SOURCE, None), *layers]


_METHODS = ("freedrag", "draggan")
_BUTTONS = (
    "new_button", "random_button", "run_button", "stop_button", "reset_button",
    "compare_button", "undo_button", "redo_button", "restore_button", "save_button",
    "movie_button",
)  # fmt: skip
