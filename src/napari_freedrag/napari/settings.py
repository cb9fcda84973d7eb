"""The dock widget's remembered settings: one small JSON file in the user's config folder.

``$NAPARI_FREEDRAG_SETTINGS`` names the file instead (tests point it into a temporary
folder, so they never touch a real home).  A missing, unreadable or corrupt file means
"no saved settings"; a file that cannot be written is logged and otherwise ignored: losing
remembered settings must never stop an edit.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SETTINGS_ENV = "NAPARI_FREEDRAG_SETTINGS"
VERSION = 1
#: Widget fields whose values belong to one preset (model kind, method, image size).
PRESET_FIELDS = ("l", "d", "lr", "mask_weight", "max_steps", "preview_every")
#: Widget fields remembered as they are, whatever the model.
REMEMBERED = (
    "model", "model_path", "device", "seed", "truncation", "prompt", "lora_steps",
    "keep_frames", "save_path", "movie_path", "fps", "method",
)  # fmt: skip


def settings_path() -> Path:
    """Where the settings live: ``$NAPARI_FREEDRAG_SETTINGS`` or the user config folder."""
    named = os.environ.get(SETTINGS_ENV)
    if named:
        return Path(named).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-freedrag", appauthor=False)) / "widget.json"


class WidgetSettings:
    """Plain values by field name, plus per-preset values (one set per model, method, size).

    ``fields`` hold what applies whatever the model (model, device, seed, file names ...);
    ``presets[key]`` hold the algorithm's knobs the user last had for one preset key, so
    switching method (or model) and back brings them back.
    """

    def __init__(self, path: Path | None = None):
        self.path = path or settings_path()
        data = self._read()
        self.fields: dict[str, Any] = dict(data.get("fields", {}))
        self.presets: dict[str, dict[str, Any]] = dict(data.get("presets", {}))

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("FreeDrag: ignoring unreadable settings %s (%s)", self.path, exc)
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {}
        return data

    def save(self) -> None:
        """Write the file atomically (a crash mid-write keeps the previous settings)."""
        payload = {"version": VERSION, "fields": self.fields, "presets": self.presets}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".json.partial")
            partial.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
            partial.replace(self.path)
        except OSError as exc:
            log.warning("FreeDrag: cannot save settings to %s (%s)", self.path, exc)

    def clear(self) -> None:
        """Forget everything (the widget's "Restore defaults")."""
        self.fields.clear()
        self.presets.clear()
        self.save()


class RememberedFields:
    """Mixin for the dock widget: fill its fields from :class:`WidgetSettings`, keep them.

    The widget provides ``settings``, ``controller``, the fields named in
    :data:`REMEMBERED` and :data:`PRESET_FIELDS`, ``_defaults`` and ``_collapsible``.
    """

    _preset_key: str | None = None
    _quiet = False  # True while the widget itself fills fields (nothing to remember)

    def restore_defaults(self):
        """Every field back to its default, the preset's knobs shown, nothing remembered."""
        self.settings.clear()
        self._quiet = True
        try:
            for name, value in self._defaults.items():
                getattr(self, name).value = value
        finally:
            self._quiet = False
        self._preset_key = None
        edit = self.controller.current_edit
        if edit is not None:
            self.apply_preset(edit.backend, self.method.value, edit.state.image_size)

    def apply_preset(self, backend, method: str, image_size) -> None:
        """Show the values for (model kind, method, size): the user's own, else the preset.

        So a new seed keeps the user's settings, switching method and back brings them back,
        and a reopened widget shows what it showed when it was closed."""
        kind = (backend.kind, getattr(backend, "category", None) or "-")
        key = "/".join([*kind, method, "x".join(str(int(s)) for s in image_size)])
        if key != self._preset_key:
            self._show_preset(key, backend.preset(method, tuple(image_size)))

    def _show_preset(self, key: str, preset) -> None:
        self._preset_key = key
        values = self.settings.presets.get(key)
        if values is None and preset is not None:
            values = {f: getattr(preset, f) for f in PRESET_FIELDS if hasattr(preset, f)}
        quiet, self._quiet = self._quiet, True
        try:
            for field, value in (values or {}).items():
                if value is not None and field in PRESET_FIELDS:
                    getattr(self, field).value = value
        finally:
            self._quiet = quiet
        self._remember_preset()

    def _remember(self, _value=None):
        if self._quiet:
            return
        for name in REMEMBERED:
            value = getattr(self, name).value
            self.settings.fields[name] = str(value) if isinstance(value, Path) else value
        self.settings.fields["preset_key"] = self._preset_key
        self.settings.fields["advanced_open"] = self._collapsible.isExpanded()
        self.settings.save()

    def _remember_preset(self, _value=None):
        if self._quiet or not self._preset_key:
            return
        self.settings.presets[self._preset_key] = {f: getattr(self, f).value for f in PRESET_FIELDS}
        self._remember()

    def _restore(self):
        """Fill the fields from the remembered settings (unknown choices are skipped)."""
        saved = self.settings.fields
        self._quiet = True
        try:
            for name in REMEMBERED:
                if saved.get(name) not in (None, ""):
                    with suppress(ValueError, TypeError):
                        getattr(self, name).value = saved[name]
        finally:
            self._quiet = False
        self._on_model_choice()
        if self.controller.current_edit is not None:
            self._on_method(self.method.value)
        elif saved.get("preset_key"):  # no image yet: what was shown for this method
            self._show_preset(with_method(saved["preset_key"], self.method.value), None)
        if saved.get("advanced_open"):
            self._collapsible.expand(animate=False)


def with_method(key: str, method: str) -> str:
    parts = key.split("/")
    return "/".join([*parts[:2], method, *parts[3:]])
