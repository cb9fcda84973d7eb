"""The ``napari-freedrag`` command: the viewer, headless edits, models, benchmarks, demo.

Only the bare command (open the viewer) and ``demo`` import napari or Qt, and only when
they run: ``--help``, ``edit`` and ``models`` work on machines without a display or a Qt
binding. A user mistake (a :class:`~napari_freedrag.errors.FreeDragError` or a bad option)
prints one line on stderr and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_freedrag import cli_checks as checks
from napari_freedrag.errors import FreeDragError, InputError

PROG = "napari-freedrag"
#: Subcommands whose options belong to another module: the rest of argv is passed on.
PASSTHROUGH = {
    "bench": ("napari_freedrag.bench", "speed and accuracy, FreeDrag vs DragGAN"),
    "batch": ("napari_freedrag.batching.command", "run a JSONL file of edits on Dask"),
    "train-cells": ("napari_freedrag.training.cells.train", "train the bundled cells StyleGAN2"),
}
EXIT_USAGE = 2


class UsageError(Exception):
    """A command line argparse could not parse; becomes one stderr line and status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        if message.startswith("argument --drag: expected one argument"):
            message += "; a point starting with '-' is written --drag=R0,C0:R1,C1"
        raise UsageError(f"{message} (see '{self.prog} --help')")


def parse_drag(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """``"R0,C0:R1,C1"`` -> ((r0, c0), (r1, c1)) in image pixels (row, col)."""
    form = "write one handle->target pair as R0,C0:R1,C1 (row,col image pixels)"
    parts = text.split(":")
    if len(parts) != 2 or not parts[1].strip():
        raise InputError(f"--drag {text!r} needs a handle and a target: {form}")
    points = []
    for part in parts:
        coords = part.split(",")
        try:
            row, col = (float(c) for c in coords)
        except ValueError:
            raise InputError(f"--drag {text!r} is not two numbers per point: {form}") from None
        if not (math.isfinite(row) and math.isfinite(col)):
            raise InputError(f"--drag {text!r} holds a NaN or infinite coordinate: {form}")
        points.append((row, col))
    return points[0], points[1]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Point-based generative image editing (FreeDrag) in napari. Without a "
        "command: open napari with the FreeDrag widget docked.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--model",
        default="cells",
        help="model for the viewer: 'cells' (bundled), a StyleGAN2 checkpoint "
        "(.pkl/.pt/.safetensors), a category name (faces, cats, ...) or ldm:PATH_OR_ID",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    edit = commands.add_parser(
        "edit",
        help="run one drag edit without a display; write the image and a JSON report",
        description="Run one drag edit headless. Points are (row, col) image pixels.",
    )
    edit.add_argument("--model", default="cells", help="same MODEL strings as the viewer")
    start = edit.add_mutually_exclusive_group()
    start.add_argument("--seed", type=int, help="start from this seed's image (default 0)")
    start.add_argument(
        "--image",
        type=Path,
        help="edit this real image (projected into a StyleGAN2 model, "
        "or inverted by an ldm: model)",
    )
    start.add_argument(
        "--latent", type=Path, metavar="W.npy", help="start from a saved StyleGAN2 W+ latent"
    )
    edit.add_argument("--prompt", default="", help="text describing --image (optional)")
    edit.add_argument(
        "--lora-steps", type=int, default=0, help="per-image LoRA steps for --image (0 = off)"
    )
    edit.add_argument(
        "--invert-steps", type=int, help="StyleGAN2 projection steps for --image (default 200)"
    )
    edit.add_argument(
        "--invert-mode",
        choices=("w", "w+", "pti"),
        help="StyleGAN2 projection for --image: w, w+ or pti (pivotal tuning; default w+)",
    )
    edit.add_argument(
        "--drag",
        action="append",
        metavar="R0,C0:R1,C1",
        help="handle -> target pair in image pixels (row,col); repeat for more points "
        "(required unless --max-steps 0, which writes the start image)",
    )
    edit.add_argument("--mask", type=Path, help="image file, nonzero = region that may change")
    edit.add_argument("--method", choices=("freedrag", "draggan"), default="freedrag")
    edit.add_argument(
        "--max-steps", type=int, help="optimiser steps at most (0 = write the start image)"
    )
    edit.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)"
    )
    edit.add_argument("--l", type=float, dest="l", help="FreeDrag template loss level l")
    edit.add_argument("--d", type=float, dest="d", help="FreeDrag max sub-motion distance d")
    edit.add_argument(
        "--save-latent",
        type=Path,
        metavar="W.npy",
        help="save the edited W+ latent as NumPy .npy; the name must end in .npy and the file "
        "is written at exactly that name",
    )
    edit.add_argument("--out", type=Path, required=True, help="edited image (.png or .tif)")
    edit.add_argument("--report", type=Path, metavar="OUT.json", help="write the JSON report")
    edit.add_argument(
        "--frames", type=Path, metavar="DIR", help="write every preview as DIR/frame_NNNN.png"
    )

    commands.add_parser(
        "models", help="list known models, where each is looked for, and whether it was found"
    )
    demo = commands.add_parser(
        "demo",
        help="open napari, run one drag with the bundled model, save screenshots and a report",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    demo.add_argument("--model", default="cells", help="model to drag with")
    demo.add_argument("--max-steps", type=int, default=100, help="optimiser steps at most")
    for name, (_, summary) in PASSTHROUGH.items():
        commands.add_parser(name, help=f"{summary} (options: {PROG} {name} --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in PASSTHROUGH:
            return _passthrough(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        if args.command == "edit":
            return _edit(args)
        if args.command == "models":
            from napari_freedrag.models.registry import format_models_table

            print(format_models_table())
            return 0
        if args.command == "demo":
            from napari_freedrag.demo import require_display, run_demo

            require_display("demo")
            if args.max_steps < 0:
                raise InputError(f"--max-steps must be 0 or more, got {args.max_steps}")
            run_demo(
                checks.output_folder(args.out, "--out"), model=args.model, max_steps=args.max_steps
            )
            return 0
        return _open_viewer(args.model)
    except (UsageError, FreeDragError) as exc:
        return _fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        # torch is not a dependency: the right build depends on the user's hardware.
        return _fail(
            "PyTorch is not installed: install the build for your hardware (pip install torch)"
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            return _fail(
                "out of memory; try fewer points, a smaller model or another --device",
                status=1,
            )
        raise


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    return status


def _version() -> str:
    from napari_freedrag import __version__

    return f"{PROG} {__version__}"


def _passthrough(name: str, rest: list[str]) -> int:
    from importlib import import_module

    module_name = PASSTHROUGH[name][0]
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return _fail(f"'{name}' is not available in this installation ({module_name} missing)")
    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _Parser.error  # their option mistakes: one line too
    try:
        status = module.main(rest)
    finally:
        argparse.ArgumentParser.error = original
    return int(status or 0)


def _edit(args: argparse.Namespace) -> int:
    import numpy as np

    import napari_freedrag as nfd
    from napari_freedrag import io
    from napari_freedrag.engine.run import start_image

    _quiet_model_libraries()
    pairs = [parse_drag(text) for text in args.drag or ()]
    checks.check_numbers(args)
    if not pairs and args.max_steps != 0:
        raise InputError(
            "give at least one --drag R0,C0:R1,C1 (or --max-steps 0 to write the start image)"
        )
    checks.check_files(args)
    # Inputs are read before the model loads: a corrupt file is found in a second, not later.
    image = io.read_image(args.image) if args.image is not None else None
    latent = checks.read_latent(args.latent) if args.latent is not None else None
    mask = io.read_mask(args.mask) if args.mask is not None else None

    gen = nfd.load_generator(args.model, device=args.device)
    start = _start_state(gen, args, image, latent)
    if mask is not None:
        mask = io.read_mask(args.mask, shape=tuple(start.image_size))
    if not pairs:
        result_image, report = start_image(gen, start), _start_report(gen, start)
        io.write_image(args.out, result_image, io.provenance_from_report(report))
        _write_extras(args, report, start.latent)
        print(f"{args.out}: start image of {gen.name} (0 steps)")
        return 0
    handles = np.array([handle for handle, _ in pairs], dtype=np.float64)
    targets = np.array([target for _, target in pairs], dtype=np.float64)
    overrides = {
        name: getattr(args, name) for name in ("l", "d") if getattr(args, name) is not None
    }

    previews = None if args.frames is not None else 0  # a preview is a render: only to keep
    steps = nfd.drag_steps(
        gen, start, handles, targets, mask=mask, method=args.method,
        max_steps=args.max_steps, preview_every=previews, **overrides,
    )  # fmt: skip
    if args.frames is not None:
        args.frames.mkdir(exist_ok=True)
    frame_count = 0
    for step in steps:
        if args.frames is not None and step.image is not None:
            io.write_image(
                args.frames / f"frame_{step.index:04d}.png",
                step.image,
                {"model": gen.name, "step": step.index, "points": step.points},
            )
            frame_count += 1
    result = steps.result

    report = dict(result.report)
    io.write_image(args.out, result.image, io.provenance_from_report(report))
    _write_extras(args, report, result.state.latent)
    print(_summary(args.out, result, frame_count, args.frames))
    return 0


def _quiet_model_libraries() -> None:
    """No progress bars or advisory warnings from Hugging Face libraries on our stderr."""
    for name, value in (
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(name, value)


def _write_extras(args: argparse.Namespace, report: dict, latent) -> None:
    from napari_freedrag import io

    if args.report is not None:
        io.write_report(args.report, report)
    if args.save_latent is not None:
        io.save_latent(args.save_latent, latent.detach().cpu().numpy())


def _start_state(gen, args: argparse.Namespace, image, latent):
    """The state the edit starts from: a real image, a saved latent or a seed."""
    if image is not None:
        if not hasattr(gen, "invert"):
            raise InputError(f"model {gen.name!r} cannot edit real images (--image)")
        projection = {"mode": args.invert_mode, "steps": args.invert_steps}
        projection = {name: value for name, value in projection.items() if value is not None}
        if gen.kind != "stylegan2":
            if projection:
                raise InputError("--invert-steps and --invert-mode are for StyleGAN2 models")
            return gen.invert(image, prompt=args.prompt, lora_steps=args.lora_steps)
        state = gen.invert(image, lora_steps=args.lora_steps, **projection)
        record = state.info["projection"]
        print(
            f"{args.image}: projected ({record['mode']}, {record['steps']} steps, "
            f"{record['seconds']:.1f} s): PSNR {record['psnr']:.2f} dB, SSIM {record['ssim']:.3f}"
        )
        return state
    if latent is not None:
        if not hasattr(gen, "from_latent"):
            raise InputError(f"model {gen.name!r} cannot start from a W+ latent (--latent)")
        return gen.from_latent(latent)
    return gen.sample(0 if args.seed is None else args.seed)


def _start_report(gen, start) -> dict:
    info = dict(getattr(start, "info", None) or {})
    return {"model": gen.name, "seed": info.get("seed"), "steps": 0, "start": info}


def _summary(out: Path, result, frame_count: int, frames: Path | None) -> str:
    points = "; ".join(
        f"({h[0]:.1f},{h[1]:.1f})->({p[0]:.1f},{p[1]:.1f})"
        for h, p in zip(result.handles, result.points, strict=False)
    )
    state = "converged" if result.converged else "stopped" if result.stopped else "not converged"
    line = (
        f"{out}: {result.steps} steps, {state}, points {points}, "
        f"{result.seconds:.1f} s ({result.seconds / max(result.steps, 1):.2f} s/step)"
    )
    if frames is not None:
        line += f", {frame_count} frames in {frames}"
    return line


def _open_viewer(model: str) -> int:
    """The main job: napari with the FreeDrag widget docked and ``model`` loaded."""
    from napari_freedrag.demo import open_viewer, require_display

    require_display("viewer")
    import napari

    open_viewer(model, show=True)
    napari.run()
    return 0
