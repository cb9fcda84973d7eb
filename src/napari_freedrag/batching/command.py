"""``napari-freedrag batch``: a JSONL file of edits, run on Dask into one output folder."""

from __future__ import annotations

import sys
from pathlib import Path

from napari_freedrag.cli import PROG, _Parser
from napari_freedrag.errors import InputError


def build_parser():

    parser = _Parser(
        prog=f"{PROG} batch",
        description="Run one drag edit per JSON line (keys: the 'edit' options' names) on "
        "Dask, locally or on a cluster; resumable; writes summary.json and summary.csv.",
    )
    parser.add_argument("edits", type=Path, metavar="EDITS.jsonl", help="one JSON object a line")
    parser.add_argument("--out", type=Path, help="output folder (outputs are relative to it)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local worker processes (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, "
                       "e.g. tcp://10.0.0.5:8786")  # fmt: skip
    parser.add_argument("--device", default="auto", help="device for lines that name none")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--plan-cells", type=int, metavar="COUNT", help="write COUNT cells-model edits with "
        "ground truth into EDITS.jsonl instead of running (then run it with --out)",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=80, help="with --plan-cells: steps cap")
    return parser


def main(argv: list[str]) -> int:
    from napari_freedrag.batching import batch, write_cells_instructions

    args = build_parser().parse_args(argv)
    if args.plan_cells is not None:
        path = write_cells_instructions(args.edits, args.plan_cells, max_steps=args.max_steps)
        print(f"{path}: {args.plan_cells} cells edits with ground truth")
        return 0
    if args.out is None:
        raise InputError("batch needs --out DIR (the folder every output is written to)")
    summary = batch(
        args.edits, args.out, workers=args.workers, scheduler=args.scheduler,
        device=args.device, progress=not args.no_progress,
    )  # fmt: skip
    counts = summary["counts"]
    print(
        f"{args.out}: {counts['done']} done, {counts['skipped']} skipped (already done), "
        f"{counts['error']} failed in {summary['wall_seconds']:.1f} s; "
        f"see {Path(args.out) / 'summary.csv'}"
    )
    failed = [row for row in summary["rows"] if row["status"] == "error"]
    if failed:
        print(f"{PROG}: error: {len(failed)} edit(s) failed; first: {failed[0]['error']}",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0
