"""``napari-freedrag bench``: options, the run, the JSON file (and the speed worker)."""

from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = "FreeDrag against DragGAN, side by side: accuracy on ground truth, speed and memory."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-freedrag bench", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 10 min on 2 cores)")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON results")
    parser.add_argument("--model", default="cells", help="model for accuracy (default: cells)")
    parser.add_argument("--device", default="auto", help="device for accuracy: auto, cpu, cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run, write the JSON, print where it went."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if getattr(args, "worker", None):
        from napari_freedrag.bench.speed import speed_run

        print(json.dumps(speed_run(json.loads(args.worker))))
        return 0
    from napari_freedrag.bench.config import full_config, quick_config
    from napari_freedrag.bench.report import run_benchmark
    from napari_freedrag.io import check_output_path, write_report

    check_output_path(args.out, "--out", (".json",))  # before minutes of work, not after
    model = getattr(args, "model", "cells")
    config = quick_config(model) if args.quick else full_config(model)
    config.device = getattr(args, "device", "auto")
    report = run_benchmark(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    path = write_report(args.out, report)
    print(f"wrote {path} ({report['wall_seconds']:.0f} s)")
    return 0
