"""What ``napari-freedrag edit`` checks before any model work: numbers in range, input
files present and readable, outputs writable and overwriting no input or other output.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from napari_freedrag.errors import InputError


def check_numbers(args: argparse.Namespace) -> None:
    if args.max_steps is not None and args.max_steps < 0:
        raise InputError(f"--max-steps must be 0 or more, got {args.max_steps}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise InputError(f"--seed must be from 0 to {2**32 - 1}, got {args.seed}")
    if args.lora_steps < 0:
        raise InputError(f"--lora-steps must be 0 or more, got {args.lora_steps}")
    for flag in ("l", "d"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{flag} must be a positive number, got {value}")


def check_files(args: argparse.Namespace) -> None:
    """Inputs exist; every output can be written and overwrites no input or other output."""
    from napari_freedrag import io

    inputs = {}
    for flag, path in (("--image", args.image), ("--latent", args.latent), ("--mask", args.mask)):
        if path is not None:
            if not path.is_file():
                raise InputError(f"{flag} {path}: file not found")
            inputs[flag] = path
    model_file = Path(args.model).expanduser()
    if model_file.is_file():
        inputs["--model"] = model_file
        if model_file.with_suffix(".json").is_file():  # its config, beside it
            inputs["--model's config"] = model_file.with_suffix(".json")
    outputs = {"--out": io.check_output_path(args.out, "--out", io.WRITABLE_SUFFIXES)}
    if args.report is not None:
        outputs["--report"] = io.check_output_path(args.report, "--report", (".json",))
    if args.save_latent is not None:
        outputs["--save-latent"] = io.check_output_path(
            args.save_latent, "--save-latent", (".npy",)
        )
    if args.frames is not None:
        outputs["--frames"] = output_folder(args.frames, "--frames", create=False)
    if args.frames is not None:
        frames = args.frames.expanduser().resolve()
        for flag, path in [*inputs.items(), *outputs.items()]:
            key = path.expanduser().resolve()
            if key.parent == frames and key.name.startswith("frame_") and key.suffix == ".png":
                raise InputError(f"{flag} {path} would be overwritten by a --frames frame")
    seen: dict[Path, str] = {}
    for flag, path in [*inputs.items(), *outputs.items()]:
        key = path.expanduser().resolve()
        if key in seen:
            kind = "input" if seen[key] in inputs else "output"
            raise InputError(
                f"{flag} {path} is the same file as {seen[key]}; refusing to overwrite an "
                f"{kind} (choose another name)"
            )
        seen[key] = flag


def output_folder(path: Path, flag: str, create: bool = True) -> Path:
    """A folder outputs go in: it may exist (as a folder) or be creatable in a writable one."""
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a folder")
    parent = path if path.is_dir() else path.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: folder {parent} is not writable")
    if create:
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot create it ({exc.strerror})") from None
    return path


def read_latent(path: Path):
    import numpy as np

    try:
        latent = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--latent {path}: not a plain .npy array ({first})") from None
    if not isinstance(latent, np.ndarray) or latent.dtype.kind not in "iuf":
        what = "an .npz archive" if not isinstance(latent, np.ndarray) else latent.dtype
        raise InputError(f"--latent {path}: holds {what}, not numbers (a saved W+ latent)")
    if not np.isfinite(latent).all():
        raise InputError(f"--latent {path}: holds NaN or infinite values")
    return latent
