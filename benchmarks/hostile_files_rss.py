"""Peak memory of loading each crafted weight file class (one fresh process per class).

Each class from ``napari_freedrag._tests.hostile_files`` is written to a temporary folder
and loaded with ``load_checkpoint`` (and ``build_generator`` when it loads) in its own
subprocess; the table gives the file size, the peak resident memory of that process
(``ru_maxrss``, Python + torch included), the same for a process that only imports the
loader (the baseline), and the first words of the message.

    OMP_NUM_THREADS=1 python benchmarks/hostile_files_rss.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys
from napari_freedrag.errors import FreeDragError
from napari_freedrag.models.stylegan2.checkpoint import build_generator, load_checkpoint
message = "loaded"
if sys.argv[1]:
    try:
        build_generator(*load_checkpoint(sys.argv[1]))
    except FreeDragError as exc:
        message = f"{type(exc).__name__}: {exc}"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mib": peak, "message": message}))
"""


def measure(path: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, path], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"peak_mib": None, "message": f"crashed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    from napari_freedrag._tests.hostile_files import FILE_CLASSES

    baseline = measure("")["peak_mib"]
    rows = []
    print(f"baseline (imports only): {baseline:.0f} MiB")
    print(f"{'file class':40s} {'file':>9s} {'peak RSS':>9s}  message")
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, write) in enumerate(FILE_CLASSES.items()):
            sub = Path(folder) / str(index)
            sub.mkdir()
            path = write(sub)
            size = sum(p.stat().st_size for p in sub.iterdir())
            row = {"class": name, "file_bytes": size, **measure(str(path))}
            rows.append(row)
            peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f} MiB"
            print(f"{name:40s} {size / 2**20:7.2f} MB {peak:>9s}  {row['message'][:90]}")
    if args.json:
        args.json.write_text(json.dumps({"baseline_mib": baseline, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
