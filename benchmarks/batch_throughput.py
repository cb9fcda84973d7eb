"""Edits per minute of ``napari-freedrag batch`` on this machine, and memory per worker.

Runs the same cells-model batch (ground truth on) on LocalClusters of 1 and 2 worker
processes and prints one line per cluster size; docs/batch.md records the figures.

    nice -n 19 python benchmarks/batch_throughput.py --edits 20 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    from napari_freedrag.batching import batch, cells_instructions
    from napari_freedrag.batching.runner import local_client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=80)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    edits = list(cells_instructions(args.edits, max_steps=args.max_steps, device="cpu"))
    load = os.getloadavg()[0]
    print(f"{len(edits)} cells edits (max_steps {args.max_steps}, truth on), "
          f"{os.cpu_count()} CPU cores, load average {load:.1f} at start")  # fmt: skip
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as folder:
            began = time.perf_counter()
            with local_client(workers, len(edits)) as client:
                started = time.perf_counter() - began
                run_began = time.perf_counter()
                summary = batch(edits, Path(folder), client=client, progress=False)
                seconds = time.perf_counter() - run_began
                rss = client.run(_peak_rss_mib)
        done = summary["counts"]["done"]
        steps = sum(row["steps"] or 0 for row in summary["rows"])
        print(
            f"workers {workers}: {done}/{len(edits)} done in {seconds:.1f} s "
            f"= {60 * done / seconds:.1f} edits/min ({steps / seconds:.1f} steps/s; cluster "
            f"start {started:.1f} s); peak RSS per worker "
            f"{', '.join(f'{v:.0f}' for v in rss.values())} MiB; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
