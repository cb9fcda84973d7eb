"""Run a batch of drag instructions on Dask: a LocalCluster, or a scheduler's cluster.

The client checks every line and the output folder first, skips edits whose report holds
the same instruction digest, submits the rest a few at a time (bounded memory for any
batch size), and writes each result atomically as it completes, updating the summary.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_freedrag.batching.files import writable_folder
from napari_freedrag.batching.instructions import Instruction, check_duplicates, read_instructions
from napari_freedrag.batching.summary import Summary
from napari_freedrag.batching.truth import label_paths
from napari_freedrag.errors import FreeDragError, InputError

INSTALL_HINT = 'pip install "napari-freedrag[batch]"'
#: Seconds to wait for a scheduler (and one of its workers) to answer.
CONNECT_TIMEOUT_S = 10.0
#: Edits in flight per worker thread: enough to keep workers busy, few enough to bound memory.
IN_FLIGHT_PER_THREAD = 2


def batch(
    instructions,
    out,
    client=None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    device: str = "auto",
    progress: bool = True,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> dict[str, Any]:
    """Run ``instructions`` (a .jsonl path, or dicts / JSON lines) into folder ``out``.

    ``client``: a ``distributed.Client`` to use as is; else ``scheduler`` (an address such
    as ``tcp://host:8786``) is connected to, else a LocalCluster of ``workers`` processes
    (default: one per CPU core, at most one per edit) runs for this batch. ``device`` is for
    lines that name none. Returns the summary (also in ``out/summary.json`` and ``.csv``).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):  # fmt: skip
        raise InputError(f"--workers must be 1 or more, got {workers!r}")
    folder = writable_folder(Path(out))
    items, _ = read_instructions(instructions)
    check_duplicates(items)
    source = str(Path(instructions).resolve()) if isinstance(instructions, str | Path) else None
    summary = Summary(folder, source)
    pending = []
    for item in items:
        if item.error is None:
            _check_not_input(item, folder)
        if item.error is not None:
            summary.set(item.line, item.out, "error", error=item.error)
        elif (row := _finished_row(item, folder)) is not None:
            summary.set(item.line, item.out, "skipped", **row)
        else:
            summary.set(item.line, item.out, "pending")
            pending.append(item)
    summary.write(force=True)
    if pending:
        _require_dask()
        try:
            with _client(client, scheduler, workers, len(pending), connect_timeout) as dask:
                summary.info["workers"] = len(dask.scheduler_info()["workers"])
                _run(dask, pending, folder, device, summary, progress)
        finally:  # interrupted or not, the summary shows every edit finished so far
            summary.write(force=True)
    return summary.write(final=True)


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise FreeDragError(f"batch runs on Dask, which is not installed: {INSTALL_HINT}") from None


@contextmanager
def _client(client, scheduler, workers, edits: int, timeout: float):
    """The given client, one connected to ``scheduler``, or a LocalCluster's (closed after)."""
    from distributed import Client

    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            connected = Client(scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(
                f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({exc}); "
                "check the address (tcp://HOST:PORT) and that 'dask scheduler' runs there"
            ) from None
        with connected:
            try:
                connected.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                raise InputError(
                    f"the Dask scheduler at {scheduler} has no workers; start one with "
                    f"'dask worker {scheduler} --nthreads 1'"
                ) from None
            yield connected
        return
    with local_client(workers, edits) as local:
        yield local


@contextmanager
def local_client(workers: int | None, edits: int):
    """A LocalCluster of worker processes with one thread (and one torch thread) each."""
    from distributed import Client, LocalCluster

    count = int(workers) if workers is not None else max(1, min(os.cpu_count() or 1, edits))
    threads_1 = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR, env=threads_1,
    ) as cluster, Client(cluster, set_as_default=False) as local:  # fmt: skip
        yield local


def _run(client, pending: list[Instruction], folder: Path, device, summary, progress) -> None:
    from distributed import as_completed
    from tqdm import tqdm

    from napari_freedrag.batching.edit import run_edit

    threads = max(1, sum(client.nthreads().values()))
    queue = iter(pending)
    by_line = {item.line: item for item in pending}
    running = as_completed(loop=client.loop)
    line_of: dict[str, int] = {}

    def submit_next() -> bool:
        for item in queue:
            try:
                task = _task(item, device)
            except FreeDragError as exc:
                summary.set(item.line, item.out, "error", error=f"line {item.line}: {exc}")
                bar.update()
                continue
            future = client.submit(run_edit, task, pure=False)
            line_of[future.key] = item.line
            running.add(future)
            return True
        return False

    with tqdm(total=len(pending), unit="edit", desc="edits", disable=not progress,
              file=sys.stderr) as bar:  # fmt: skip
        for _ in range(threads * IN_FLIGHT_PER_THREAD):
            if not submit_next():
                break
        for future in running:
            try:
                reply = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails one row, not all
                reply = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            item = by_line[line_of.pop(future.key)]
            future.release()
            summary.set(item.line, item.out, **_save(item, reply, folder))
            summary.write()
            bar.update()
            submit_next()


def _task(item: Instruction, device: str) -> dict[str, Any]:
    """What the worker needs: options, points and the input files' pixels (read here)."""
    from napari_freedrag import io

    task: dict[str, Any] = {
        "line": item.line,
        "options": item.options,
        "pairs": item.pairs,
        "device": item.options.get("device", device),
    }
    if "image" in item.inputs:
        task["image"] = io.read_image(item.inputs["image"])
    if "mask" in item.inputs:
        task["mask"] = io.read_mask(item.inputs["mask"])
    if "latent" in item.inputs:
        from napari_freedrag.cli_checks import read_latent

        task["latent"] = read_latent(item.inputs["latent"])
    return task


def _save(item: Instruction, reply: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write one finished edit (image, latent, labels, then the report last); its row."""
    row = {"worker": reply.get("worker")}
    if reply["status"] != "done":
        return {**row, "status": "error", "error": f"line {item.line}: {reply['error']}"}
    from napari_freedrag import io

    paths = {key: folder / path for key, path in item.outputs.items()}
    report = reply["report"]
    try:
        io.write_image(paths["out"], reply["image"], io.provenance_from_report(report))
        if reply.get("latent") is not None:
            io.save_latent(paths["save_latent"], reply["latent"])
        truth = reply.get("truth")
        if truth is not None:
            import tifffile

            for key, path in label_paths(paths["out"]).items():
                with io.atomic_path(path) as temporary:
                    tifffile.imwrite(temporary, truth[key])
                paths[key] = path
            report["ground_truth"] = {k: truth[k] for k in ("cells", "cell_displacement")}
        report["batch"] = {
            "digest": item.digest(),
            "line": item.line,
            "instruction": item.options,
            "outputs": {key: os.path.relpath(path, folder) for key, path in paths.items()},
            "worker": reply.get("worker"),
            "model_loaded": reply.get("model_loaded"),
        }
        io.write_report(paths["report"], report)
    except (OSError, FreeDragError) as exc:
        return {**row, "status": "error", "error": f"line {item.line}: cannot write: {exc}"}
    return {**row, "status": "done", **_row_fields(report)}


def _row_fields(report: dict[str, Any]) -> dict[str, Any]:
    truth = report.get("ground_truth") or {}
    return {
        "steps": report.get("steps"),
        "converged": report.get("converged"),
        "seconds": report.get("seconds"),
        "final_points": report.get("final_points"),
        "content_displacement": _content_displacement(report),
        "cell_displacement": truth.get("cell_displacement"),
        "digest": (report.get("batch") or {}).get("digest"),
    }


def _content_displacement(report: dict[str, Any]) -> list | None:
    """Per handle, how far the engine measured its content to have moved (row, col)."""
    content, handles = report.get("content_points"), report.get("handles")
    if not content or not handles or len(content) != len(handles):
        return None
    return (np.asarray(content, float) - np.asarray(handles, float)).round(3).tolist()


def _finished_row(item: Instruction, folder: Path) -> dict[str, Any] | None:
    """The row of an earlier run of the same instruction whose outputs all exist, or None."""
    import json

    path = folder / item.outputs["report"]
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        recorded = report["batch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(recorded, dict) or recorded.get("digest") != item.digest():
        return None
    outputs = recorded.get("outputs") or {}
    if not all((folder / rel).is_file() for rel in outputs.values()):
        return None
    return {"worker": recorded.get("worker"), **_row_fields(report)}


def _check_not_input(item: Instruction, folder: Path) -> None:
    """An output that would overwrite one of the edit's inputs makes the line an error."""
    inputs = set(item.inputs.values())
    for key, path in item.outputs.items():
        if (folder / path).resolve() in inputs:
            item.error = f"line {item.line}: {key} {path} would overwrite an input file"
            return
