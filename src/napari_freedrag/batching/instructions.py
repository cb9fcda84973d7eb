"""One batch instruction per JSON line, checked on the client before anything is sent out.

The keys are the ``napari-freedrag edit`` options' names (``max_steps`` or ``max-steps``),
plus ``truth`` (cells ground truth, see :mod:`~napari_freedrag.batching.truth`). Output
paths are relative to the batch's output folder; input paths are relative to the folder
of the instructions file. A line that cannot be an edit becomes an :class:`Instruction`
with ``error`` set, so it lands in the summary as an error row and the rest runs.
Parameter values (``max_steps``, ``l``, ``d``, ``method``) are checked by the engine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from napari_freedrag.errors import InputError

#: Keys an instruction may carry, with the JSON types each accepts.
KEYS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "seed": (int,),
    "image": (str,),
    "latent": (str,),
    "prompt": (str,),
    "lora_steps": (int,),
    "invert_steps": (int,),
    "invert_mode": (str,),
    "drag": (list, str),
    "mask": (str,),
    "method": (str,),
    "max_steps": (int,),
    "device": (str,),
    "l": (int, float),
    "d": (int, float),
    "save_latent": (str,),
    "out": (str,),
    "report": (str,),
    "truth": (bool,),
}
INPUT_KEYS = ("image", "latent", "mask")
OUTPUT_KEYS = ("out", "report", "save_latent")
#: Files the batch itself writes into the output folder.
SUMMARY_NAMES = ("summary.json", "summary.csv")
#: Keys that change what an edit produces, hence its digest (``device`` does not).
_DIGEST_SKIP = {"device"}


@dataclass
class Instruction:
    """One line of the batch: ``options`` as given (normalised), or the ``error`` it has."""

    line: int
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    inputs: dict[str, Path] = field(default_factory=dict)
    _digest: str | None = field(default=None, repr=False)

    @property
    def out(self) -> str:
        return str(self.options.get("out", ""))

    def digest(self) -> str:
        """What the edit means: its options and the bytes of its input files (cached)."""
        if self._digest is None:
            self._digest = self._compute_digest()
        return self._digest

    def _compute_digest(self) -> str:
        meaning = {k: v for k, v in self.options.items() if k not in _DIGEST_SKIP}
        meaning["drag"] = [list(map(list, pair)) for pair in self.pairs]
        sha = hashlib.sha256(json.dumps(meaning, sort_keys=True).encode())
        for key in sorted(self.inputs):
            sha.update(key.encode())
            sha.update(hashlib.sha256(self.inputs[key].read_bytes()).digest())
        return sha.hexdigest()


def read_instructions(source, base: Path | None = None) -> tuple[list[Instruction], Path]:
    """Instructions from a JSONL path, or from an iterable of dicts / JSON strings.

    Returns them and the folder relative input paths are taken from.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"instructions file not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read instructions {path}: {exc}") from None
        base = path.resolve().parent if base is None else base
        items: Iterable = lines
    elif isinstance(source, Iterable):
        items = source
    else:
        raise InputError("instructions must be a .jsonl path or a list of dicts / JSON lines")
    base = Path.cwd() if base is None else Path(base)
    instructions = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str) and not item.strip():
            continue  # blank lines separate groups; they are not edits
        instructions.append(parse_instruction(number, item, base))
    if not instructions:
        raise InputError("no instructions: the batch has no lines with an edit")
    return instructions, base


def parse_instruction(line: int, item, base: Path) -> Instruction:
    """One instruction from a JSON text or a dict; problems become its ``error``."""
    try:
        return _parse(line, item, base)
    except InputError as exc:
        return Instruction(line, error=f"line {line}: {exc}")


def _parse(line: int, item, base: Path) -> Instruction:
    if isinstance(item, str):
        try:
            item = json.loads(item)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, Mapping):
        raise InputError(f"must be one JSON object, got {type(item).__name__}")
    options: dict[str, Any] = {}
    for raw_key, value in item.items():
        key = str(raw_key).replace("-", "_")
        if key == "frames":
            raise InputError("frames are not written in batch runs; drop the key")
        if key not in KEYS:
            raise InputError(f"unknown key {raw_key!r}; use the edit options: {', '.join(KEYS)}")
        accepted = KEYS[key]
        if isinstance(value, bool) and bool not in accepted or not isinstance(value, accepted):
            names = " or ".join("number" if t is float else t.__name__ for t in accepted)
            raise InputError(f"{key!r} must be a JSON {names}, got {value!r}")
        options[key] = value
    if "out" not in options:
        raise InputError('no "out": name the image to write, e.g. "out": "cell3.png"')
    starts = [k for k in ("seed", "image", "latent") if k in options]
    if len(starts) > 1:
        raise InputError(f"give one of seed, image or latent, not {' and '.join(starts)}")
    instruction = Instruction(line, options)
    instruction.pairs = _pairs(options.get("drag"))
    for key in INPUT_KEYS:
        if key in options:
            path = Path(options[key]).expanduser()
            path = path if path.is_absolute() else base / path
            if not path.is_file():
                raise InputError(f"{key} {options[key]}: file not found")
            instruction.inputs[key] = path.resolve()
    outputs = {key: options[key] for key in OUTPUT_KEYS if key in options}
    outputs.setdefault("report", str(PurePosixPath(options["out"]).with_suffix(".json")))
    from napari_freedrag import io

    if Path(outputs["out"]).suffix.lower() not in io.WRITABLE_SUFFIXES:
        raise InputError(f"out {outputs['out']!r}: use a .png or .tif file name")
    if Path(outputs["report"]).suffix.lower() != ".json":
        raise InputError(f"report {outputs['report']!r}: use a .json file name")
    if "save_latent" in outputs and Path(outputs["save_latent"]).suffix.lower() != ".npy":
        raise InputError(f"save_latent {outputs['save_latent']!r}: use a .npy file name")
    for key, text in outputs.items():
        instruction.outputs[key] = _relative(key, text)
    if len(set(instruction.outputs.values())) < len(instruction.outputs):
        raise InputError("out, report and save_latent must be different files")
    return instruction


def _relative(key: str, text: str) -> Path:
    """An output path inside the output folder (no absolute paths, no ``..``)."""
    path = PurePosixPath(text.replace("\\", "/"))
    if not text.strip() or path.is_absolute() or ".." in path.parts:
        raise InputError(f"{key} {text!r} must be a file name inside the output folder")
    if str(path) in SUMMARY_NAMES:
        raise InputError(f"{key} {text!r} is the batch's own summary file; pick another name")
    return Path(*path.parts)


def _pairs(drag) -> list:
    """``drag`` as handle -> target pairs: "R0,C0:R1,C1" strings or [[r0, c0], [r1, c1]]."""
    from napari_freedrag.cli import parse_drag

    if drag is None:
        raise InputError('no "drag": give e.g. "drag": ["30,30:30,36"] (row,col pixels)')
    items = [drag] if isinstance(drag, str) or _is_point_pair(drag) else drag
    if not items:
        raise InputError('"drag" is empty: give at least one handle->target pair')
    pairs = []
    for entry in items:
        if isinstance(entry, str):
            pairs.append(parse_drag(entry))
            continue
        try:
            (r0, c0), (r1, c1) = entry
            pair = ((float(r0), float(c0)), (float(r1), float(c1)))
        except (TypeError, ValueError):
            raise InputError(
                f"drag entry {entry!r}: write 'R0,C0:R1,C1' or [[r0, c0], [r1, c1]]"
            ) from None
        pairs.append(pair)
    return pairs


def _is_point_pair(value) -> bool:
    """``[[r0, c0], [r1, c1]]``: one pair, as opposed to a list of pairs."""
    return len(value) == 2 and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)
        for p in value
    )


def check_duplicates(instructions: list[Instruction]) -> None:
    """Two lines that would write the same file: the later one becomes an error row."""
    owner: dict[Path, int] = {}
    for instruction in instructions:
        if instruction.error:
            continue
        clash = next((owner[p] for p in instruction.outputs.values() if p in owner), None)
        if clash is not None:
            instruction.error = (
                f"line {instruction.line}: writes the same file as line {clash}; "
                "give each edit its own out"
            )
            continue
        for path in instruction.outputs.values():
            owner[path] = instruction.line
