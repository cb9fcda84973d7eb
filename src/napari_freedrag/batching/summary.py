"""The batch's summary: one row per instruction, as JSON and CSV, rewritten as edits finish."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from napari_freedrag.io import atomic_path, jsonable

COLUMNS = (
    "line", "out", "status", "steps", "converged", "seconds", "final_points",
    "content_displacement", "cell_displacement", "worker", "error", "digest",
)  # fmt: skip
#: Row statuses: ``done`` ran now, ``skipped`` finished in an earlier run of the same
#: instruction, ``error`` could not run, ``pending`` not finished yet.
STATUSES = ("done", "skipped", "error", "pending")
#: A running batch rewrites its summary at most this often (and always at the end).
WRITE_EVERY_S = 2.0


class Summary:
    """Rows by line number; :meth:`write` puts ``summary.json`` and ``summary.csv`` in DIR."""

    def __init__(self, folder: Path, source: str | None, workers: int | None = None):
        self.folder = folder
        self.info: dict[str, Any] = {
            "instructions": source,
            "out": str(folder),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished": None,
            "workers": workers,
        }
        self.rows: dict[int, dict[str, Any]] = {}
        self._began = time.perf_counter()
        self._written = 0.0

    def set(self, line: int, out: str, status: str, **fields) -> None:
        row = dict.fromkeys(COLUMNS)
        row.update(line=line, out=out, status=status, **fields)
        self.rows[line] = row

    def as_dict(self) -> dict[str, Any]:
        rows = [self.rows[line] for line in sorted(self.rows)]
        counts = Counter(row["status"] for row in rows)
        return {
            **self.info,
            "wall_seconds": round(time.perf_counter() - self._began, 3),
            "counts": {status: counts.get(status, 0) for status in STATUSES},
            "rows": rows,
        }

    def write(self, final: bool = False, force: bool = False) -> dict[str, Any]:
        """Write both files now (``final``/``force``) or if the last write is old enough."""
        if not (final or force) and time.perf_counter() - self._written < WRITE_EVERY_S:
            return {}
        if final:
            self.info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        document = jsonable(self.as_dict())
        with atomic_path(self.folder / "summary.json") as temporary:
            temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        with (
            atomic_path(self.folder / "summary.csv") as temporary,
            temporary.open("w", newline="", encoding="utf-8") as handle,
        ):
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in document["rows"]:
                writer.writerow({k: _cell(row[k]) for k in COLUMNS})
        self._written = time.perf_counter()
        return document


def _cell(value: Any) -> Any:
    """CSV cell: lists as JSON, missing values empty."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list | dict) else value
